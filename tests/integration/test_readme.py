"""Every command README.md shows works: the block after `<!-- readme-commands -->` is run in order."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- readme-commands -->", 1)[1]
    match = re.search(r"```sh\n(.*?)```", block, re.S)
    assert match, "README.md: no ```sh block after <!-- readme-commands -->"
    return [line for line in match.group(1).splitlines() if line.strip()]


def test_readme_commands_run(efficientnet_model, minilm_model, image_sets, text_sets, example_cache, tmp_path):
    commands = readme_commands()
    assert len(commands) >= 10
    env = dict(os.environ)
    for line in commands:
        line = line.replace(".cache/examples", str(example_cache)).replace("out/readme", str(tmp_path / "readme"))
        args = shlex.split(line)
        program = {"edgeq": [sys.executable, "-m", "edgeq"], "edgeq-run": [sys.executable, "-m", "edgeq_runtime"]}
        proc = subprocess.run(program[args[0]] + args[1:], cwd=ROOT, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert (tmp_path / "readme" / "compare.html").stat().st_size > 10_000
    assert (tmp_path / "readme" / "effnet-orin-nano" / "manifest.json").is_file()
