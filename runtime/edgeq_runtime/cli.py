"""``edgeq-run``: the board-side command. argparse, not Typer: the runtime stays numpy + onnxruntime.

``edgeq-run bench PATH`` measures a bundle or model and prints a table (``--json`` also saves the
record). A user mistake prints ``error: <one line>`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, NoReturn, Optional

from edgeq_runtime import __version__
from edgeq_runtime.errors import BundleError


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one ``error:`` line and exit status 2, like every other failure here
    (argparse's default prints the whole usage block first)."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        sys.stderr.write("error: " + self.prog + ": " + message + " (see '" + self.prog + " --help')\n")
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="edgeq-run", description="Run and measure an edgeq bundle on this device (ONNX Runtime or TensorRT)."
    )
    parser.add_argument("--version", action="version", version="edgeq-runtime " + __version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    bench = commands.add_parser(
        "bench", help="latency, throughput, per-op time and energy of a bundle or model",
        description="Measure latency, throughput, per-op time and energy. Inputs are synthesised from the "
        "model's input specs unless --feeds is given.",
    )
    bench.add_argument("path", help="bundle folder (with manifest.json), .onnx model or TensorRT .engine")
    bench.add_argument("--backend", choices=("auto", "ort", "tensorrt"), default="auto")
    bench.add_argument("--providers", default=None, help="comma-separated onnxruntime execution providers")
    bench.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    bench.add_argument("--warmup", type=int, default=20, help="warm-up iterations (default 20)")
    length = bench.add_mutually_exclusive_group()
    length.add_argument("--iterations", type=int, default=200, help="measured iterations (default 200)")
    length.add_argument("--duration", type=float, default=None, help="measure for this many seconds instead")
    bench.add_argument("--batch", type=int, default=None, help="batch size for a dynamic first dimension")
    bench.add_argument("--shape", action="append", default=[], metavar="NAME:1x128",
                       help="concrete shape of a dynamic input (repeatable)")
    bench.add_argument("--feeds", default=None, help=".npz with one array per input, instead of synthetic inputs")
    bench.add_argument("--energy", choices=("auto", "none"), default="auto", help="measure energy with the power "
                       "sensors found here (default auto)")
    bench.add_argument("--idle", type=float, default=5.0, help="idle baseline before the run, seconds (default 5)")
    bench.add_argument("--power-root", default="/", help=argparse.SUPPRESS)  # fixture trees in tests
    bench.add_argument("--top-ops", type=int, default=10, help="ops to list from the profiling pass; 0 disables it")
    bench.add_argument("--cache-dir", default=None, help="where built TensorRT engines are cached")
    bench.add_argument("--json", default=None, metavar="OUT.json", help="also write the result record here")
    bench.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return parser


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgeq_runtime.bench import benchmark, format_result
    from edgeq_runtime.inputs import load_feeds, parse_shape_overrides, resolve_shapes
    from edgeq_runtime.manifest import Manifest
    from edgeq_runtime.session import Session

    if args.json:
        from edgeq_runtime._fileio import names_an_input

        path_in = Path(args.path)
        inputs = [path_in, path_in.with_name(path_in.name + ".data")] + ([args.feeds] if args.feeds else [])
        clash = names_an_input(args.json, inputs)
        if clash is not None:
            raise BundleError("--json " + str(args.json) + ": that would replace the input " + str(clash) + "; choose another path")
    shapes = parse_shape_overrides(args.shape)
    feeds = load_feeds(args.feeds) if args.feeds else None
    # A TensorRT engine is built for concrete shapes, so for a bundle they are resolved before opening.
    build_shapes = dict(shapes)
    path = Path(args.path)
    if path.is_dir() and feeds is None:
        build_shapes = resolve_shapes(Manifest.read(path).inputs, batch=args.batch, overrides=shapes)
    elif feeds is not None:
        build_shapes = {name: list(value.shape) for name, value in feeds.items()}
    providers = [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers else None
    with Session(path, backend=args.backend, providers=providers, threads=args.threads, shapes=build_shapes,
                 cache_dir=args.cache_dir) as session:
        result = benchmark(
            session,
            warmup=args.warmup,
            iterations=args.iterations,
            duration=args.duration,
            batch=args.batch,
            energy=args.energy,
            idle_s=args.idle if args.energy != "none" else 0.0,
            profile_ops=args.top_ops > 0,
            top_ops=args.top_ops,
            feeds=feeds,
            shapes=shapes,
            power_root=args.power_root,
        )
    if args.json:
        result.save(args.json)
    if not args.quiet:
        print(format_result(result))
        if args.json:
            print("wrote " + str(args.json))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return _bench(args)
    except BundleError as exc:
        print("error: " + str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
