"""Generation speed and memory: edgeq-run against onnxruntime-genai and a plain copy-every-step loop.

The same int4 decoder (``edgeq quantize --weights int4``, MatMulNBits) is run three ways, each
in its own process (so resident memory is its own), greedy, on the same prompt ids:

* **edgeq-run**: ``edgeq_runtime.Session.stream`` on the ``edgeq export`` bundle (the KV cache
  kept in onnxruntime's memory through IO binding; one preallocated buffer for GQA graphs);
* **onnxruntime-genai** (pip ``onnxruntime-genai``, CPU): ``og.Generator`` on a folder holding the
  same model file with a ``genai_config.json`` (the builder's own for ``--model builder``; written
  here from the bundle's decoder block for edgeq's SmolLM2 export);
* **copy loop**: ``InferenceSession.run`` with the cache as numpy arrays, presents fed back as the
  next pasts: what a first generation loop in Python looks like.

Per runner, after one untimed warm-up generation of a few tokens in the same process: time to
first token (TTFT) for the prompt, decode ms/token (median of all steps, and
of the steps at 448-576 tokens of context), tokens/s, resident memory at token 64 and at the last
token (1024 by default), the process CPU time per decoded token (all threads: the work per token,
which a loaded machine distorts less than wall time), and the tokens themselves (all three must agree). The memory-bandwidth
bound per token (every weight byte read once per token, ``benchmarks/decoder.py``'s measurement)
is printed beside. The machine is shared: its load average is printed with the table.

    python benchmarks/generate.py [--model smollm2|builder] [--cache .cache/examples] [--new-tokens 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "runtime"))

RUNNERS = ("edgeq-run", "onnxruntime-genai", "copy-loop")
CHECKPOINTS = (64, 128, 256, 512, 1024, 2048)
CONTEXT_WINDOW = (448, 576)  # "decode at 512 tokens of context"


def rss_bytes() -> int | None:
    from edgeq_runtime.bench_decoder import resident_bytes

    return resident_bytes()


# -- the three loops (each runs in a child process) ---------------------------------------------
# Each ``open_*`` loads its runner once and returns ``run(new) -> (ids, ms per token, RSS by token)``;
# the child runs it once for WARMUP_TOKENS untimed (first-run allocations), then measured.
WARMUP_TOKENS = 4


class Clock:
    """Per-token times (ms since the previous token; the first since the start) and RSS at checkpoints."""

    def __init__(self, new: int) -> None:
        self.new, self.ids, self.times, self.rss = new, [], [], {}
        self.cpu_s: list[float] = []  # process CPU time (all threads) at the first and the last token
        self._t = time.perf_counter()

    def token(self, token: int) -> None:
        now = time.perf_counter()
        if not self.ids or len(self.ids) + 1 == self.new:
            self.cpu_s.append(time.process_time())
        self.ids.append(token)
        self.times.append((now - self._t) * 1e3)
        self._t = now
        if len(self.ids) in CHECKPOINTS or len(self.ids) == self.new:
            self.rss[str(len(self.ids))] = rss_bytes()


def open_edgeq(folder: Path, prompt: list[int], threads: int) -> Any:
    from edgeq_runtime import Session

    session = Session(folder / "bundle", threads=threads)

    def run(new: int) -> Clock:
        clock = Clock(new)
        for token in session.stream(ids=prompt, max_new_tokens=new, stop_ids=[]):
            clock.token(token.id)
        return clock
    return run


def open_genai(folder: Path, prompt: list[int], threads: int) -> Any:
    import onnxruntime_genai as og

    model = og.Model(str(folder / "genai"))

    def run(new: int) -> Clock:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt) + new, min_length=len(prompt) + new, do_sample=False)
        generator = og.Generator(model, params)
        clock = Clock(new)
        generator.append_tokens(prompt)
        while not generator.is_done():
            generator.generate_next_token()
            clock.token(int(generator.get_next_tokens()[0]))
        return clock
    return run


def open_copy(folder: Path, prompt: list[int], threads: int) -> Any:
    import onnxruntime as ort
    from edgeq_runtime.manifest import Manifest

    spec = Manifest.read(folder / "bundle").decoder
    assert spec is not None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(folder / "bundle" / "model.onnx"), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    has_positions = "position_ids" in {i.name for i in session.get_inputs()}

    def run(new: int) -> Clock:
        past = {n: np.zeros((1, spec.kv.kv_heads, 0, spec.kv.head_size), spec.kv.dtype) for n in spec.kv.past_names()}
        step, length = np.asarray([prompt], np.int64), 0
        clock = Clock(new)
        while len(clock.ids) < new:
            feeds = {"input_ids": step, "attention_mask": np.ones((1, length + step.shape[1]), np.int64), **past}
            if has_positions:
                feeds["position_ids"] = np.arange(length, length + step.shape[1], dtype=np.int64)[None]
            out = dict(zip(names, session.run(None, feeds), strict=True))
            length += step.shape[1]
            past = {n: out[n.replace("past_key_values", "present")] for n in past}
            token = int(out["logits"][0, -1].argmax())
            step = np.asarray([[token]], np.int64)
            clock.token(token)
        return clock
    return run


LOOPS = {"edgeq-run": open_edgeq, "onnxruntime-genai": open_genai, "copy-loop": open_copy}


def child(args: argparse.Namespace) -> int:
    prompt = json.loads(Path(args.prompt_file).read_text())
    run = LOOPS[args.child](Path(args.folder), prompt, args.threads)
    run(WARMUP_TOKENS)
    clock = run(args.new_tokens)
    print(json.dumps({"ids": clock.ids, "times_ms": clock.times, "rss": clock.rss, "cpu_s": clock.cpu_s}))
    return 0


# -- preparing the model three ways -----------------------------------------------------------


def genai_config(spec: Any, heads: int, filename: str, threads: int) -> dict[str, Any]:
    """onnxruntime-genai's config for an edgeq decoder bundle (edgeq's layout: concat cache, position_ids).

    Where the bundle states no EOS id, the last id stands in (the runs set min_length, so no
    runner stops early whatever EOS says).
    """
    generation = spec.generation
    eos = generation.eos_token_ids or [spec.vocab_size - 1]
    inputs = {"input_ids": "input_ids", "attention_mask": "attention_mask",
              "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"}
    if spec.kv.position_ids:
        inputs["position_ids"] = "position_ids"
    return {
        "model": {
            "type": "llama", "context_length": spec.context_length, "vocab_size": spec.vocab_size,
            "bos_token_id": generation.bos_token_id if generation.bos_token_id is not None else eos[0],
            "eos_token_id": eos if len(eos) > 1 else eos[0], "pad_token_id": eos[0],
            "decoder": {
                "filename": filename, "head_size": spec.kv.head_size,
                "hidden_size": spec.kv.head_size * heads, "num_attention_heads": heads,
                "num_hidden_layers": spec.kv.layers, "num_key_value_heads": spec.kv.kv_heads,
                "session_options": {"log_id": "onnxruntime-genai", "intra_op_num_threads": threads,
                                    "provider_options": []},
                "inputs": inputs,
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"do_sample": False, "max_length": spec.context_length, "num_beams": 1,
                   "past_present_share_buffer": False},
    }


def prepare(model: str, cache: Path, work: Path, threads: int, context: int) -> tuple[Path, Path, str]:
    """work/<model>/ with bundle/ (edgeq export) and genai/ (same model file); (folder, tokenizer, note)."""
    from edgeq_runtime.manifest import Manifest

    from edgeq.cli import main as edgeq

    folder = work / model
    if model == "builder":
        from examples.builder_decoder import build_builder_decoder

        source = build_builder_decoder(cache)
        extras = [source.parent / n for n in ("genai_config.json", "tokenizer.json", "tokenizer_config.json")]
        note = "onnxruntime-genai's builder folder (GQA, shared buffer), int4 by edgeq"
    else:
        source = cache / "smollm2.onnx"
        if not source.is_file():
            raise SystemExit(f"{source} is missing: python examples/smollm2.py --cache {cache} builds it")
        extras = [cache / "smollm2.tokenizer.json"]
        note = "edgeq's SmolLM2 export (concat cache), int4 by edgeq, genai_config.json written here"
    quantized = folder / "int4" / "model.onnx"
    if not quantized.is_file():
        quantized.parent.mkdir(parents=True, exist_ok=True)
        assert edgeq(["quantize", str(source), "--weights", "int4", "-o", str(quantized), "--quiet"]) == 0
    for extra in extras:
        target = quantized.parent / ("tokenizer.json" if extra.name.endswith("tokenizer.json") else extra.name)
        shutil.copyfile(extra, target)
    if not (folder / "bundle" / "manifest.json").is_file():
        args = ["export", str(quantized), "--target", "x86-cpu", "-o", str(folder / "bundle"), "--quiet"]
        assert edgeq(args + ([] if model == "builder" else ["--context-length", str(context)])) == 0
    spec = Manifest.read(folder / "bundle").decoder
    assert spec is not None
    genai = folder / "genai"
    shutil.rmtree(genai, ignore_errors=True)
    genai.mkdir()
    for name in os.listdir(folder / "bundle"):
        if name.startswith("model.onnx") or name == "tokenizer.json":
            os.link(folder / "bundle" / name, genai / name)
    if model == "builder":
        config = json.loads((quantized.parent / "genai_config.json").read_text())
        config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = threads
    else:
        from edgeq.frontends.gguf import read_config
        from examples.smollm2 import smollm2_gguf_path

        heads = read_config(smollm2_gguf_path()).num_heads  # edgeq's graph has no attention op stating it
        config = genai_config(spec, heads, "model.onnx", threads)
    (genai / "genai_config.json").write_text(json.dumps(config, indent=2))
    return folder, quantized.parent / "tokenizer.json", note


def prompt_ids(tokenizer: Path, count: int, vocab: int) -> list[int]:
    """The first ``count`` tokens of a pydoc_data topic, tokenized (random ids if it is too short)."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tokenizer)).encode(topics["with"]).ids[:count]
    if len(ids) < count:
        ids += list(np.random.default_rng(0).integers(0, vocab, count - len(ids)))
    return [int(i) for i in ids]


# -- the parent: run, tabulate --------------------------------------------------------------


def run_child(runner: str, folder: Path, prompt_file: Path, new: int, threads: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", runner, "--folder", str(folder), "--prompt-file", str(prompt_file),
               "--new-tokens", str(new), "--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "runtime"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {done.returncode}: {tail[0][:200]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(result: dict[str, Any], prompt: int) -> dict[str, Any]:
    times = result["times_ms"]
    steps = np.asarray(times[1:])
    context = prompt + 1 + np.arange(steps.size)  # tokens in the cache when the step ran
    window = steps[(context >= CONTEXT_WINDOW[0]) & (context <= CONTEXT_WINDOW[1])]
    rss = result["rss"]
    last = str(len(result["ids"]))
    cpu = result.get("cpu_s") or []
    cpu_ms = (cpu[-1] - cpu[0]) * 1e3 / steps.size if len(cpu) == 2 and steps.size else float("nan")
    return {"ttft": times[0], "decode": float(np.median(steps)), "cpu": cpu_ms, "decode_512": float(np.median(window)) if window.size else float("nan"),
            "tps": steps.size / (steps.sum() / 1e3), "rss64": rss.get("64"), "rss_last": rss.get(last), "last": last}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", choices=("smollm2", "builder"), default="smollm2")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "examples")
    parser.add_argument("--work", type=Path, default=None, help="where the int4 model, bundle and genai folder go")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each runner, interleaved")
    parser.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--prompt-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    from edgeq_runtime.manifest import Manifest

    from benchmarks.decoder import memory_bandwidth

    work = args.work or args.cache / "generate"
    context = max(2048, args.prompt_tokens + args.new_tokens)
    folder, tokenizer, note = prepare(args.model, args.cache, work, args.threads, context)
    spec = Manifest.read(folder / "bundle").decoder
    assert spec is not None
    new = min(args.new_tokens, spec.context_length - args.prompt_tokens)
    if new < 2:
        raise SystemExit(f"--prompt-tokens {args.prompt_tokens} leaves no room in the context of {spec.context_length}")
    prompt = prompt_ids(tokenizer, args.prompt_tokens, spec.vocab_size)
    prompt_file = folder / "prompt.json"
    prompt_file.write_text(json.dumps(prompt))
    results: dict[str, list[dict[str, Any]]] = {r: [] for r in RUNNERS}
    for i in range(args.rounds):
        for runner in RUNNERS:
            print(f"  round {i + 1}/{args.rounds}: {runner}", file=sys.stderr, flush=True)
            results[runner].append(run_child(runner, folder, prompt_file, new, args.threads))
    weights = sum(p.stat().st_size for p in (folder / "bundle").iterdir() if p.name.startswith("model.onnx"))
    bandwidth, how = memory_bandwidth()
    print(f"model: {note}; {weights / 1e6:.1f} MB of model file, KV {spec.kv.bytes_per_token:,} B/token, "
          f"prompt {args.prompt_tokens} tokens, {new} new tokens, greedy, {args.threads} threads, CPU")
    print(f"machine: {os.cpu_count()} CPUs, load average {', '.join(f'{v:.2f}' for v in os.getloadavg())} "
          f"(1/5/15 min) after the run; memory bandwidth {bandwidth / 1e9:.1f} GB/s ({how})")
    print(f"bandwidth bound: {weights / bandwidth * 1e3:.2f} ms/token (every model byte read once per token)")
    header = (f"{'runner':20}{'TTFT ms':>10}{'ms/token':>10}{'@512 ms':>10}{'CPU ms/tok':>11}{'tokens/s':>10}"
              f"{'RSS@64 MB':>11}{'RSS@last MB':>13}{'growth':>8}  note")
    print(header)
    print("-" * len(header))
    rows: dict[str, dict[str, Any]] = {}
    for runner in RUNNERS:
        good = [r for r in results[runner] if "error" not in r]
        if not good:
            print(f"{runner:20}{'':>72}  failed: {results[runner][0]['error']}")
            continue
        stats = [summarize(r, args.prompt_tokens) for r in good]
        row = {k: float(np.median([s[k] for s in stats])) if k not in ("last",) and all(s[k] is not None for s in stats)
               else stats[0][k] for k in stats[0]}
        rows[runner] = row
        growth = (row["rss_last"] / row["rss64"] - 1) * 100 if row["rss64"] and row["rss_last"] else float("nan")
        same = "same tokens as edgeq-run" if good[0]["ids"] == results["edgeq-run"][0].get("ids") else "TOKENS DIFFER"
        print(f"{runner:20}{row['ttft']:>10.2f}{row['decode']:>10.3f}{row['decode_512']:>10.3f}{row['cpu']:>11.3f}"
              f"{row['tps']:>10.1f}"
              f"{(row['rss64'] or 0) / 1e6:>11.1f}{(row['rss_last'] or 0) / 1e6:>13.1f}{growth:>7.1f}%  "
              f"RSS last at token {row['last']}; {same}")
    edgeq = rows.get("edgeq-run")
    if edgeq:
        for peer in ("onnxruntime-genai", "copy-loop"):
            if peer in rows:
                other = rows[peer]
                print(f"edgeq-run / {peer}: decode ms/token {edgeq['decode'] / other['decode']:.2f}x "
                      f"(at 448-576 context {edgeq['decode_512'] / other['decode_512']:.2f}x), "
                      f"CPU time per token {edgeq['cpu'] / other['cpu']:.2f}x, TTFT {edgeq['ttft'] / other['ttft']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
