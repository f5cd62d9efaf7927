"""The report as data: the ``edgeq.Report`` JSON document and how sections are assembled.

The HTML page and the JSON file are two views of one ``Report``: the page is rendered from the
document, never from the raw inputs, so a number cannot differ between what a person reads and
what a CI script checks. The JSON embeds each input result whole (the runtime's benchmark dict,
the ``edgeq.CompareResult`` envelope) next to the numbers the report derives from them.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from edgeq.errors import ConfigError
from edgeq.report.analysis import compare_summary, decoder_summary, profile_summary
from edgeq.report.inputs import (
    COMPARE_TYPE,
    COMPARE_VERSION,
    DECODER_COMPARE_TYPE,
    DECODER_COMPARE_VERSION,
    as_plain,
    normalize_benchmark,
    normalize_compare,
    normalize_decoder_compare,
    sanitize_json,
    section_kind,
)
from edgeq.serialization import Serializable


@dataclasses.dataclass(frozen=True)
class ReportSection:
    """One result to show, with how to title it.

    ``result`` is a result object, its dict, or the path of a JSON file holding one (or an
    earlier ``edgeq.Report``). ``target`` names the board a profile ran on (shown in its
    header); ``reference_label`` is how the float reference appears in a comparison's table and
    plots; by default it is read from the reference model's weights ("fp32", "fp16").
    """

    result: Any
    title: str | None = None
    target: str | None = None
    reference_label: str | None = None


@dataclasses.dataclass
class Report(Serializable):
    """A rendered report's numbers. ``sections`` are dicts tagged by ``kind``.

    A ``profile`` section holds ``benchmark`` (the runtime's BenchmarkResult dict) and
    ``summary``; a ``compare`` section holds ``compare`` (an ``edgeq.CompareResult`` envelope)
    and ``summary`` (headline accuracy metric and Pareto fronts). Non-finite numbers (an SQNR of
    infinity for identical outputs) are written as null so strict JSON parsers accept the file.
    """

    schema_type: ClassVar[str] = "edgeq.Report"
    schema_version: ClassVar[int] = 1

    title: str
    created_utc: str
    edgeq_version: str
    sections: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        # In memory the sections keep inf (the page shows "∞"); the file gets null.
        return sanitize_json(super().to_dict())  # type: ignore[no-any-return]


def _display_name(path: str) -> str:
    return os.path.basename(path.rstrip("/\\")) or path


def profile_section(result: Any, title: str | None = None, target: str | None = None) -> dict[str, Any]:
    bench = normalize_benchmark(result)
    target = target or bench.get("target")
    return {
        "kind": "profile",
        "title": title or f"Profile: {_display_name(bench['model'])}",
        "target": str(target) if target else None,
        "benchmark": bench,
        "summary": profile_summary(bench),
    }


def _precision_label(path: str) -> str:
    """The reference's precision from its float weights (fp32, fp16); "reference" if unreadable."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # the file may have moved since the comparison ran; the label is cosmetic
        return "reference"
    counts: dict[int, int] = {}
    for init in model.graph.initializer:
        counts[init.data_type] = counts.get(init.data_type, 0) + 1
    names: dict[int, str] = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}
    floats = {t: n for t, n in counts.items() if t in names}
    return names[max(floats, key=lambda t: floats[t])] if floats else "reference"


def _comparison(kind: str, compare: dict[str, Any], envelope: tuple[str, int], heading: str,
                title: str | None, reference_label: str | None) -> dict[str, Any]:
    if reference_label is None:
        reference_label = _precision_label(compare["reference"])
    summary = decoder_summary if kind == "decoder" else compare_summary
    return {
        "kind": kind,
        "title": title or f"{heading}: {_display_name(compare['reference'])}",
        "reference_label": reference_label,
        "compare": {"_type": envelope[0], "_version": envelope[1], "_data": compare},
        "summary": summary(compare, reference_label),
    }


def compare_section(result: Any, title: str | None = None, reference_label: str | None = None) -> dict[str, Any]:
    return _comparison("compare", normalize_compare(result), (COMPARE_TYPE, COMPARE_VERSION), "Compare", title, reference_label)


def decoder_section(result: Any, title: str | None = None, reference_label: str | None = None) -> dict[str, Any]:
    """A language-model comparison; ``compare`` holds the ``edgeq.DecoderCompareResult`` envelope."""
    envelope = (DECODER_COMPARE_TYPE, DECODER_COMPARE_VERSION)
    return _comparison("decoder", normalize_decoder_compare(result), envelope, "Compare (decoder)", title, reference_label)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON result ({exc})") from None


def _expand(item: Any) -> list[ReportSection]:
    """Sections from one input: a result, a ReportSection, or a JSON file (an earlier report expands)."""
    spec = item if isinstance(item, ReportSection) else ReportSection(result=item)
    if not isinstance(spec.result, (str, Path)):
        return [spec]
    path = Path(spec.result)
    data = _read_json(path)
    if isinstance(data, dict) and data.get("_type") == Report.schema_type:
        report = Report.from_dict(data, source=str(path))
        return [_from_built(section, spec.title if len(report.sections) == 1 else None) for section in report.sections]
    return [dataclasses.replace(spec, result=data)]


def _from_built(section: dict[str, Any], title: str | None) -> ReportSection:
    if section.get("kind") == "profile":
        return ReportSection(section["benchmark"], title or section.get("title"), section.get("target"))
    return ReportSection(section.get("compare"), title or section.get("title"), reference_label=section.get("reference_label"))


def _section(spec: ReportSection, index: int) -> dict[str, Any]:
    where = f"report section {index + 1}"
    try:
        raw = as_plain(spec.result)
        kind = section_kind(raw)
        if kind == "profile":
            return profile_section(raw, spec.title, spec.target)
        if kind == "decoder":
            return decoder_section(raw, spec.title, spec.reference_label)
        return compare_section(raw, spec.title, spec.reference_label)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def build_report(sections: Sequence[Any], title: str | None = None) -> Report:
    """Validate every section and derive its summary numbers; nothing is written yet."""
    if isinstance(sections, (dict, ReportSection, str, Path)) or hasattr(sections, "to_dict"):
        sections = [sections]
    specs = [spec for item in sections for spec in _expand(item)]
    if not specs:
        raise ConfigError("report: no sections to show; pass at least one benchmark or compare result")
    built = [_section(spec, i) for i, spec in enumerate(specs)]
    if title is None:
        title = built[0]["title"] if len(built) == 1 else "edgeq report"
    from edgeq import __version__

    created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    return Report(title=title, created_utc=created, edgeq_version=__version__, sections=built)


def report_json(report: Report) -> str:
    """The document as the ``--json`` file holds it: indented, strict JSON (no NaN or infinity)."""
    return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"


def load_report(path: str | Path) -> Report:
    """Read a report JSON written earlier (for re-rendering, or for a CI check)."""
    return Report.load(path)
