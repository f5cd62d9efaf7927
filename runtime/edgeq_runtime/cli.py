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
    bench.add_argument("--prompt-lengths", default=None, metavar="16,64,128",
                       help="decoder bundles: prompt lengths whose prefill is timed (default 16,64,128)")
    bench.add_argument("--prefill-runs", type=int, default=3, help="decoder bundles: timed prefills per length")
    bench.add_argument("--json", default=None, metavar="OUT.json", help="also write the result record here")
    bench.add_argument("--quiet", action="store_true", help="print nothing but errors")

    gen = commands.add_parser(
        "generate", help="generate text with a decoder bundle, printed as it is made",
        description="Generate with a KV-cache decoder bundle. Greedy unless --temperature > 0. Text in and out "
        "needs the bundle's tokenizer and the tokenizers package; --ids works without either.",
    )
    gen.add_argument("path", help="decoder bundle folder (edgeq export of a KV-cache model)")
    prompt = gen.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", default=None, help="text prompt (needs the bundle's tokenizer)")
    prompt.add_argument("--ids", default=None, help="prompt as comma-separated token ids; prints ids")
    gen.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most (default 64)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    gen.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0 = all)")
    gen.add_argument("--top-p", type=float, default=1.0, help="sample from the smallest set holding this mass")
    gen.add_argument("--seed", type=int, default=None, help="seed of the sampler (reproducible runs)")
    stops = gen.add_mutually_exclusive_group()
    stops.add_argument("--stop-id", type=int, action="append", default=None,
                       help="stop at this token id (repeatable; replaces the bundle's EOS ids)")
    stops.add_argument("--ignore-eos", action="store_true", help="never stop before --max-new-tokens")
    gen.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    gen.add_argument("--json", default=None, metavar="OUT.json", help="also write the generation record here")
    return parser


def _decoder_options(args: argparse.Namespace) -> dict:
    options: dict = {"prefill_runs": args.prefill_runs}
    if args.prompt_lengths is not None:
        options["prompt_lengths"] = _parse_ids(args.prompt_lengths, "--prompt-lengths")
    return options


def _parse_ids(text: str, option: str = "--ids") -> List[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part != ""]
    except ValueError:
        raise BundleError(option + ": expected comma-separated integers like 1,42,7, got " + repr(text)) from None


def _generate(args: argparse.Namespace) -> int:
    import json

    from edgeq_runtime.generate import Token
    from edgeq_runtime.session import Session

    if args.json:
        from pathlib import Path

        from edgeq_runtime._fileio import names_an_input

        clash = names_an_input(args.json, [Path(args.path)])  # the bundle folder and everything in it
        if clash is not None:
            raise BundleError("--json " + str(args.json) + ": that would replace the input " + str(clash)
                              + "; choose another path")
    ids = _parse_ids(args.ids) if args.ids is not None else None
    stop_ids = [] if args.ignore_eos else args.stop_id
    with Session(args.path, backend="ort", threads=args.threads) as session:
        text_out = ids is None

        def show(token: Token) -> None:
            piece = token.text if text_out else str(token.id) + " "
            sys.stdout.write(piece)
            sys.stdout.flush()

        result = session.generate(args.prompt, ids, args.max_new_tokens, temperature=args.temperature,
                                  top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop_ids=stop_ids, on_token=show)
    sys.stdout.write("\n")
    if args.json:
        from edgeq_runtime._fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(result.to_dict(), indent=2) + "\n")
    return 0


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
            decoder_options=_decoder_options(args),
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
        return _generate(args) if args.command == "generate" else _bench(args)
    except BundleError as exc:
        print("error: " + str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
