"""``edgeq sweep``: a grid of quantizations run as Ray tasks, each result profiled on every board.

Every job is cached under ``OUT/cache/jobs/<key>/`` where the key is the sha256 of the model
file, the config's JSON, the data file and the sample count: a rerun, or a run after a crash or
a kill, redoes only what has no finished entry (entries are written whole or not at all). Each
profile is cached the same way by the job key, the board's address/target/sysfs root and the
run options. When everything is cached, no Ray is started at all.

Ray: ``ray.init()`` on this machine (``num_cpus`` = its cores) or ``--ray-address`` to join a
cluster. Quantization tasks take one CPU each; profile tasks take the board's resource
``board:<name>`` (amount 1), so a board never runs two measurements at once, even for two sweeps
on one cluster (which must then declare those resources: ``ray start --resources``). A board
that drops mid-run is retried once; a second drop is recorded as that profile's error.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.errors import BoardError, BoardLostError, ConfigError, EdgeqError, MissingDependencyError
from edgeq.fileio import OutputSet, atomic_directory, atomic_write_text, sha256_file
from edgeq.fleet.grid import SweepGrid, load_grid
from edgeq.fleet.inventory import Board, load_boards
from edgeq.fleet.pareto import Constraints, annotate

Say = Callable[[str], None]


def board_resource(board: Board) -> str:
    return f"board:{board.name}"


def job_name(config: Any) -> str:
    """``weight_only int4 b32 hqq``: the scheme and the fields that differ from its defaults."""
    import dataclasses

    from edgeq.fleet.grid import scheme_configs

    scheme = next(name for name, cls in scheme_configs().items() if isinstance(config, cls))
    short = {"weights": "", "block_size": "b", "method": "", "budget_bytes": "budget ", "avg_bits": "avg"}
    parts = [scheme]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.default is not dataclasses.MISSING and value == f.default and f.name not in ("weights",):
            continue
        if value is None:
            continue
        shown = getattr(value, "value", value)
        shown = ",".join(map(str, shown)) if isinstance(shown, tuple) else shown
        parts.append(f"{short[f.name]}{shown}" if f.name in short else f"{f.name}={shown}")
    return " ".join(parts)


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8") + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Job:
    key: str
    name: str
    config: Any
    model: str
    data: str
    samples: int | None
    batch_size: int
    cache: str

    @property
    def entry(self) -> Path:
        return Path(self.cache) / "jobs" / self.key


def run_job(job: Job) -> dict[str, Any]:
    """Quantize one config and measure its accuracy against the float model; cached by ``job.key``.

    A config that fails (unsupported on this model) returns a record with ``error``, not cached.
    """
    record_path = job.entry / "job.json"
    if record_path.is_file():
        return {**json.loads(record_path.read_text(encoding="utf-8")), "cached": True}
    from edgeq.evaluate.compare import compare_models
    from edgeq.quantize.api import quantize_file
    from edgeq.report.analysis import headline_metric

    base = {"key": job.key, "name": job.name, "config": job.config.to_dict()}
    started, cpu = time.perf_counter(), time.process_time()
    try:
        with atomic_directory(job.entry) as tmp:
            quantized = tmp / "model.onnx"
            quantize_file(job.model, job.config, quantized, data=job.data, samples=job.samples,
                          batch_size=job.batch_size, progress=False)
            quantize_s = time.perf_counter() - started
            compare = compare_models(job.model, [quantized], job.data, samples=job.samples,
                                     batch_size=job.batch_size, layers=False, latency=False)
            data = compare.to_dict()["_data"]
            metric = headline_metric(data)
            variant = data["variants"][0]
            record = {
                **base, "model": str(job.entry / "model.onnx"), "file_bytes": variant["file_bytes"],
                "accuracy_metric": metric, "accuracy": variant["metrics"][metric], "metrics": variant["metrics"],
                "samples": data["samples"], "quantize_s": quantize_s, "seconds": time.perf_counter() - started,
                "cpu_s": time.process_time() - cpu,  # every thread of the process that ran the job
            }
            atomic_write_text(tmp / "job.json", json.dumps(record, indent=1, allow_nan=False) + "\n")
    except EdgeqError as exc:
        return {**base, "error": str(exc), "cached": False}
    return {**record, "cached": False}


@dataclass(frozen=True)
class ProfileOptions:
    warmup: int = 10
    iterations: int = 100
    idle_s: float = 1.0
    energy: str = "auto"


def profile_job(record: dict[str, Any], board: Board, options: ProfileOptions, cache: str) -> dict[str, Any]:
    """Export one quantized model for ``board``'s target and profile it there (a lost board: one retry)."""
    from edgeq.export import export_bundle
    from edgeq.fleet.remote import profile_on_board
    from edgeq.profile import BenchOptions

    pkey = _digest(record["key"], board.ssh, board.target, board.sysfs_root, json.dumps(options.__dict__, sort_keys=True))
    path = Path(cache) / "profiles" / f"{pkey}.json"
    base = {"key": record["key"], "board": board.name, "target": board.target}
    if path.is_file():
        return {**json.loads(path.read_text(encoding="utf-8")), "cached": True}
    bundle = Path(cache) / "jobs" / record["key"] / "bundles" / board.name / f"{record['key'][:16]}-{board.target}"
    try:
        if not (bundle / "manifest.json").is_file():
            export_bundle(record["model"], board.target, output=bundle, progress=False, force=True)
    except EdgeqError as exc:
        return {**base, "error": f"export for {board.target}: {exc}", "cached": False}
    started = time.time()
    for attempt in (1, 2):
        try:
            bench = BenchOptions(warmup=options.warmup, iterations=options.iterations, idle_s=options.idle_s,
                                 energy=options.energy)
            result = profile_on_board(bundle, board, bench)
            break
        except BoardLostError as exc:
            if attempt == 2:
                return {**base, "error": f"{exc} (after one retry)", "cached": False}
        except BoardError as exc:
            return {**base, "error": str(exc), "cached": False}
    energy = result.get("energy") or {}
    out = {
        **base, "latency_ms": result["latency_ms"]["p50"], "latency_p99_ms": result["latency_ms"]["p99"],
        "energy_mj": energy.get("energy_per_inference_mj") if energy.get("available") else None,
        "energy_reason": None if energy.get("available") else energy.get("reason"),
        "iterations": result["iterations"], "attempts": attempt, "started": started, "finished": time.time(),
    }
    atomic_write_text(path, json.dumps(out, indent=1, allow_nan=False) + "\n")
    return {**out, "cached": False}


@dataclass
class SweepResult:
    jobs: list[dict[str, Any]]
    profiles: list[dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    executor: str = "serial"
    seconds: float = 0.0


def plan_jobs(model: str | Path, grid: SweepGrid, data: str | Path, cache: Path) -> list[Job]:
    from edgeq.frontends.resolve import resolve_model

    onnx_path = resolve_model(model)
    if not Path(onnx_path).is_file():
        raise ConfigError(f"{model}: model file not found")
    data_path = Path(data)
    data_id = sha256_file(data_path) if data_path.is_file() else str(data)
    model_sha = sha256_file(onnx_path)
    samples = grid.options.get("samples")
    batch = int(grid.options.get("batch_size", 8))
    jobs = []
    for config in grid.configs:
        key = _digest(model_sha, config.to_json(indent=None), data_id, str(samples), str(batch))
        jobs.append(Job(key, job_name(config), config, str(onnx_path), str(data), samples, batch, str(cache)))
    return jobs


def _profile_options(grid: SweepGrid) -> ProfileOptions:
    o = grid.options
    return ProfileOptions(int(o.get("warmup", 10)), int(o.get("iterations", 100)), float(o.get("idle_s", 1.0)),
                          str(o.get("energy", "auto")))


def _all_cached(jobs: list[Job], boards: list[Board], options: ProfileOptions) -> bool:
    if not all((j.entry / "job.json").is_file() for j in jobs):
        return False
    for job in jobs:
        for board in boards:
            pkey = _digest(job.key, board.ssh, board.target, board.sysfs_root, json.dumps(options.__dict__, sort_keys=True))
            if not (Path(job.cache) / "profiles" / f"{pkey}.json").is_file():
                return False
    return True


def _serial(jobs: list[Job], boards: list[Board], options: ProfileOptions, say: Say) -> tuple[list[dict], list[dict]]:
    records, profiles = [], []
    for job in jobs:
        records.append(run_job(job))
        say(job_line(records[-1], len(records), len(jobs)))
        if "error" not in records[-1]:
            for board in boards:
                profiles.append(profile_job(records[-1], board, options, job.cache))
                say(profile_line(profiles[-1], records[-1]["name"]))
    return records, profiles


def _ray(jobs: list[Job], boards: list[Board], options: ProfileOptions, say: Say, address: str | None,
         num_cpus: int | None) -> tuple[list[dict], list[dict]]:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "fleet", "edgeq sweep on Ray") from None
    resources = {board_resource(b): 1.0 for b in boards}
    settings: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if address:
        ray.init(address=address, **settings)
        missing = [r for r in resources if r not in ray.cluster_resources()]
        if missing:
            ray.shutdown()
            raise ConfigError(f"--ray-address {address}: the cluster has no resource {missing[0]!r}; start its nodes with "
                              f"ray start --resources '{json.dumps({m: 1 for m in missing})}'")
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, resources=resources, **settings)
    waiting: dict[Any, Job] = {}
    profiling: dict[Any, str] = {}
    try:
        quantize = ray.remote(num_cpus=1, max_retries=0)(run_job)
        measure = ray.remote(num_cpus=0, max_retries=0)(profile_job)
        waiting.update({quantize.remote(job): job for job in jobs})
        records, profiles = [], []
        while waiting or profiling:
            done, _ = ray.wait(list(waiting) + list(profiling), num_returns=1)
            ref = done[0]
            if ref in waiting:
                job = waiting.pop(ref)
                records.append(ray.get(ref))
                say(job_line(records[-1], len(records), len(jobs)))
                if "error" not in records[-1]:
                    for board in boards:
                        task = measure.options(resources={board_resource(board): 1.0})
                        profiling[task.remote(records[-1], board, options, job.cache)] = records[-1]["name"]
            else:
                name = profiling.pop(ref)
                profiles.append(ray.get(ref))
                say(profile_line(profiles[-1], name))
        return records, profiles
    except KeyboardInterrupt:
        # Cancelling raises KeyboardInterrupt inside each running task, so a profile stops its
        # remote edgeq-run (BoardConnection.run) before the workers go away.
        for ref in [*waiting, *profiling]:
            ray.cancel(ref)
        if profiling:
            ray.wait(list(profiling), num_returns=len(profiling), timeout=15)
        raise
    finally:
        ray.shutdown()


def job_line(record: dict[str, Any], done: int, total: int) -> str:
    head = f"[{done}/{total}] {record['name']}"
    if "error" in record:
        return f"{head}: failed: {record['error']}"
    how = "cached" if record.get("cached") else f"quantized in {record['quantize_s']:.1f} s"
    return f"{head}: {record['accuracy_metric']} {record['accuracy']:.5f}, {record['file_bytes'] / 1e6:.2f} MB ({how})"


def profile_line(profile: dict[str, Any], name: str) -> str:
    head = f"  {profile['board']}: {name}"
    if "error" in profile:
        return f"{head}: not measured: {profile['error']}"
    energy = f", {profile['energy_mj']:.3f} mJ" if profile.get("energy_mj") is not None else ""
    return f"{head}: p50 {profile['latency_ms']:.3f} ms{energy}{' (cached)' if profile.get('cached') else ''}"


def rows_of(records: list[dict[str, Any]], profiles: list[dict[str, Any]], boards: list[Board]) -> list[dict[str, Any]]:
    """One row per (job, board) — or per job when there are no boards — in grid order."""
    by_key = {(p["key"], p["board"]): p for p in profiles}
    rows = []
    for record in records:
        common = {k: record.get(k) for k in ("key", "name", "config", "accuracy_metric", "accuracy", "file_bytes", "metrics")}
        if "error" in record:
            common["error"] = record["error"]
        if not boards:
            rows.append({**common, "board": None})
        for board in boards:
            p = by_key.get((record["key"], board.name), {})
            row = {**common, "board": board.name, "target": board.target}
            row.update({k: p.get(k) for k in ("latency_ms", "latency_p99_ms", "energy_mj", "energy_reason")})
            if "error" in p:
                row["error"] = p["error"]
            rows.append(row)
    return rows


def run_sweep(
    model: str | Path,
    grid_path: str | Path,
    data: str | Path,
    output: str | Path,
    boards_path: str | Path | None = None,
    constraints: Constraints | None = None,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    serial: bool = False,
    on_line: Say | None = None,
) -> SweepResult:
    """The public function behind ``edgeq sweep``: run (or resume) the sweep and write its outputs.

    Writes ``OUT/results.jsonl`` (one row per model and board) and ``OUT/report.html``, both
    replaced atomically at the end; ``OUT/cache/`` keeps every finished job and profile.
    """
    from edgeq.fleet.sweep_report import write_sweep_report

    say = on_line or (lambda line: None)
    grid = load_grid(grid_path)
    boards = list(load_boards(boards_path).boards) if boards_path is not None else []
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out}: exists and is not a folder")
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(model, grid, data, cache)
    options = _profile_options(grid)
    started = time.perf_counter()
    if serial or _all_cached(jobs, boards, options):
        records, profiles = _serial(jobs, boards, options, say)
        executor = "serial" if serial else "cache"
    else:
        records, profiles = _ray(jobs, boards, options, say, ray_address, num_cpus)
        executor = "ray"
    order = {job.key: i for i, job in enumerate(jobs)}
    records.sort(key=lambda r: order[r["key"]])
    result = SweepResult(records, profiles, rows_of(records, profiles, boards), executor)
    constraints = constraints or Constraints()
    annotate(result.rows, constraints)
    with OutputSet() as outputs:
        lines = "".join(json.dumps(row, allow_nan=False) + "\n" for row in result.rows)
        outputs.path(out / "results.jsonl").write_text(lines, encoding="utf-8")
        write_sweep_report(result.rows, constraints, outputs.path(out / "report.html"))
    result.seconds = time.perf_counter() - started
    return result
