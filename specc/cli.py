"""The `specc` command line. Exit codes: 0 ok, 1 spec errors (rendered with locations), 2 usage errors.

Only `compile --target torch|tvm`, `train-script`, `diff`, `tune` and `weights` import torch or tvm, and only when
run."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import CheckError, UsageError
from .options import parse_define, parse_dims

EXIT_SPEC, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3


def _load(args, path: str, base: dict[str, Any] | None = None):
    """The spec with -D overrides (on top of `base`, e.g. the hyper-parameters a weights file was imported with)."""
    import specc

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"no such file: {path}")
    overrides = dict(base or {})
    overrides.update(parse_define(d) for d in (args.define or []))
    return specc.load(p, getattr(args, "model", None), overrides=overrides, limits=_limits(args))


def _limits(args):
    from .limits import FIELDS, Limits

    given = {f: getattr(args, f"max_{f}") for f in FIELDS if getattr(args, f"max_{f}", None) is not None}
    return Limits(**given)


# ---- commands -------------------------------------------------------------------------------------------------

def cmd_check(args) -> int:
    status = 0
    for path in args.files:
        try:
            spec = _load(args, path)
            if any(n.site for n in spec.module.graph.nodes()):  # `for ... as` loops: that they can be written so
                spec.torch_source()
        except CheckError as e:
            print(e.render(), file=sys.stderr)
            status = max(status, EXIT_INTERNAL if e.internal else EXIT_SPEC)
            continue
        s = spec.summary()
        if not args.quiet:
            print(f"{path}: ok: model {spec.name}, {len(list(spec.module.walk()))} nodes, {s.params:,} params")
    return status


def cmd_inspect(args) -> int:
    spec = _load(args, args.file)
    module = spec.module
    if args.optimize is not None or args.passes or args.print_after_all or args.print_after or args.disable_pass \
            or args.inference:
        module = _run_passes(args, module)
    from .summary import default_env, render_table, summarize

    env = default_env(module)
    env.update(parse_dims(args.dim))
    fmt = args.format
    if fmt == "table":
        out = render_table(summarize(module, args.flat), env)
    elif fmt == "text":
        from .ir import Module
        from .printer import print_module

        m = module if not args.flat else Module(**{**module.__dict__, **{"graphs": _flat_graphs(module)}})
        out = print_module(m)
    elif fmt == "json":
        out = json.dumps(summarize(module, args.flat).to_json(env), indent=2)
    elif fmt in ("dot", "svg", "html"):
        from .viz import GraphvizMissing, render

        try:
            out = render(module, fmt, flat=args.flat)
        except GraphvizMissing as e:
            raise UsageError(f"--format {fmt}: {e}") from None
    else:  # argparse restricts choices
        raise UsageError(f"unknown format {fmt}")
    _write_out(args, out)
    return 0


def _flat_graphs(module):
    from .flatten import flatten_module

    return flatten_module(module).graphs


def _run_passes(args, module):
    from .passes import DEFAULT_LEVEL, PipelineOptions, run_pipeline

    opts = PipelineOptions(level=DEFAULT_LEVEL if args.optimize is None else args.optimize, disabled=tuple(args.disable_pass or ()),
                           print_after_all=args.print_after_all, print_after=tuple(args.print_after or ()),
                           report=args.passes, verify=getattr(args, "debug", False),
                           inference=getattr(args, "inference", False))
    module, log = run_pipeline(module, opts)
    if log:
        print(log, file=sys.stderr if args.format in ("json", "dot", "svg", "html") else sys.stdout)
    return module


def _write_out(args, text: str) -> None:
    out = getattr(args, "output", None)
    if out:
        from .fsutil import atomic_write

        atomic_write(Path(out), text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def cmd_ops(args) -> int:
    from .ops import all_ops
    from .ops.describe import closest, describe, signature

    ops = all_ops()
    if args.name:
        if args.name not in ops:
            close = closest(args.name, sorted(ops))
            raise UsageError(f"no op {args.name!r}" + (f"; did you mean {close!r}?" if close else "")
                             + " (`specc ops` lists them)")
        print(describe(ops[args.name]))
        return 0
    for _, op in sorted(ops.items()):
        print(f"{signature(op)}\n    {op.doc}")
    return 0


def cmd_compile(args) -> int:
    from .targets import load_target

    target = load_target(args.target)
    from .api import compile_to

    dims = parse_dims(args.dim)
    if dims and target.backend != "tvm":
        raise UsageError("--dim fixes symbolic dims for a static TVM build; the PyTorch module takes any size")
    weights = None
    if args.weights:
        if target.backend != "tvm":
            raise UsageError("--weights builds weights into a TVM library; the emitted PyTorch module loads them "
                             "with specc.load(spec).to_torch(weights=PATH)")

        spec = _load(args, args.file, _weights_overrides(args.weights))
        weights = spec.to_torch(weights=args.weights)
    else:
        spec = _load(args, args.file)
    written = compile_to(spec, target, Path(args.output), force=args.force, opt_level=args.optimize,
                         disabled=tuple(args.disable_pass or ()), dims=dims or None, weights=weights)
    for p in written:
        print(f"wrote {p}")
    return 0


def _weights_overrides(path: str) -> dict[str, Any]:
    """The hyper-parameters a `specc weights import` file records (from the checkpoint's config.json)."""
    from .weights import stored_overrides

    if not Path(path).exists():
        raise UsageError(f"no such weights file: {path}")
    return stored_overrides(path)


def cmd_weights_import(args) -> int:
    from .api import import_weights

    if not Path(args.file).is_file():
        raise UsageError(f"no such file: {args.file}")
    if not Path(args.checkpoint).exists():
        raise UsageError(f"no such checkpoint: {args.checkpoint}")
    overrides = dict(parse_define(d) for d in (args.define or []))
    result = import_weights(args.file, args.checkpoint, args.output, args.map, overrides=overrides, model=args.model,
                            into=args.into)
    where = f"model {result.spec.name}" + (f", submodule {args.into.removesuffix('.')}" if args.into else "")
    print(f"map {result.map.name}: {args.checkpoint} -> {where}")
    if result.from_config:
        print("config.json set " + " ".join(f"-D {k}={v!r}" if isinstance(v, str) else f"-D {k}={v}"
                                            for k, v in result.from_config.items()))
    print(result.report.summary())
    print(f"wrote {args.output}")
    return 0


def cmd_weights_export(args) -> int:
    from .weights import export_weights

    spec = _load(args, args.file, _weights_overrides(args.weights))
    report = export_weights(spec, args.weights, args.map, args.output, dtype=args.dtype)
    print(f"map {args.map}: model {spec.name} -> {args.output}")
    print(report.summary())
    print(f"wrote {args.output}")
    return 0


def cmd_train_script(args) -> int:
    from .backends.train import write_train_script

    spec = _load(args, args.file)
    path = write_train_script(spec, Path(args.output), force=args.force)
    print(f"wrote {path}")
    return 0


def cmd_diff(args) -> int:
    from .backends.tvm.diff import run_diff

    spec = _load(args, args.file)
    return run_diff(spec, target=args.target, dims=parse_dims(args.dim), rtol=args.rtol, atol=args.atol)


def cmd_tune(args) -> int:
    from .backends.tvm.tune import run_tune

    spec = _load(args, args.file)
    return run_tune(spec, target=args.target, dims=parse_dims(args.dim), trials=args.trials)


# ---- argument parsing -----------------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-D", dest="define", action="append", metavar="NAME=VALUE",
                   help="override a model hyper-parameter (repeatable)")
    p.add_argument("--model", help="which model of the file (default: the first)")
    from .limits import FIELDS, WHAT, Limits

    g = p.add_argument_group("compile-time budgets")
    for f in FIELDS:
        g.add_argument(Limits.flag(f), dest=f"max_{f}", type=_positive, metavar="N",
                       help=f"most {WHAT[f]} (default {getattr(Limits(), f):,})")


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def _passes(p: argparse.ArgumentParser) -> None:
    p.add_argument("-O", dest="optimize", type=int, choices=(0, 1, 2), default=None,
                   help="optimization level: 0 none; 1 (default) exact rewrites, every layer still called through its "
                        "module (hooks, LoRA, torchinfo work); 2 adds eager fusion that calls fused layers' weights "
                        "directly: same state_dict, forward hooks on those layers no longer fire (TVM fuses at 1 too)")
    p.add_argument("--disable-pass", action="append", metavar="NAME", help="skip one pass (repeatable)")
    p.add_argument("--debug", action="store_true", help="verify the IR between passes")


def build_parser() -> argparse.ArgumentParser:
    """The command line's grammar. Long because it is a declarative table, one paragraph per sub-command."""
    ap = argparse.ArgumentParser(prog="specc", description="Compile .nn model specs to checked IR, PyTorch and TVM.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="parse and shape-check spec files")
    p.add_argument("files", nargs="+")
    p.add_argument("-q", "--quiet", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("inspect", help="print a per-layer table, IR text, JSON or a graph picture")
    p.add_argument("file")
    p.add_argument("--format", choices=("table", "text", "json", "dot", "svg", "html"), default="table")
    p.add_argument("--flat", action="store_true", help="expand repeats")
    p.add_argument("--dim", action="append", metavar="NAME=INT", help="value of a symbolic dim for cost figures")
    p.add_argument("-o", "--output", help="write to a file instead of stdout")
    p.add_argument("--passes", action="store_true", help="run the pipeline and report what each pass did")
    p.add_argument("--print-after-all", action="store_true")
    p.add_argument("--print-after", action="append", metavar="PASS")
    p.add_argument("--inference", action="store_true", help="let the passes assume eval mode (drop dropout)")
    _common(p)
    _passes(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("compile", help="emit PyTorch (default) or build TVM kernels")
    p.add_argument("file")
    p.add_argument("--target", default="torch", help="a target name from targets/ or a path to a .toml file")
    p.add_argument("-o", "--output", default="out", help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite files specc did not write")
    p.add_argument("--dim", action="append", metavar="NAME=INT",
                   help="TVM only: fix a symbolic dim (e.g. B=1) for a static-shape build that can use tuned kernels")
    p.add_argument("--weights", metavar="PATH",
                   help="TVM only: build these weights in (specc's layout, from `specc weights import`)")
    _common(p)
    _passes(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("weights", help="import a pretrained checkpoint into a spec's layout, or export it back")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    w = wsub.add_parser("import", help="convert a checkpoint (file or Hugging Face folder) to the spec's layout")
    w.add_argument("file", help="the spec")
    w.add_argument("checkpoint", help=".safetensors, .bin/.pt/.pth, a shard index or a folder with config.json")
    w.add_argument("--map", help="a map name (specs/maps/NAME.toml) or .toml path; default: the spec's best match")
    w.add_argument("--into", metavar="NAME",
                   help="fill only this submodule (a model called as a block, `... as NAME`) through the map, e.g. "
                        "a BERT checkpoint into a classifier's backbone; the rest stays for train.py --init-from to "
                        "initialise")
    w.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    _common(w)
    w.set_defaults(func=cmd_weights_import)
    w = wsub.add_parser("export", help="write specc weights in a checkpoint's own layout (config.json + weights)")
    w.add_argument("file", help="the spec")
    w.add_argument("weights", help="a .safetensors file in the spec's layout (from `specc weights import`)")
    w.add_argument("--map", required=True, help="a map name (specs/maps/NAME.toml) or .toml path")
    w.add_argument("-o", "--output", required=True, help="the folder to write")
    w.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="store the weights in this dtype")
    _common(w)
    w.set_defaults(func=cmd_weights_export)

    p = sub.add_parser("train-script", help="write a standalone training script")
    p.add_argument("file")
    p.add_argument("-o", "--output", default="train.py")
    p.add_argument("--force", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_train_script)

    p = sub.add_parser("diff", help="run PyTorch and TVM node by node and report the first divergence")
    p.add_argument("file")
    p.add_argument("--target", default="tvm-cpu")
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--dim", action="append", metavar="NAME=INT")
    _common(p)
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("tune", help="tune TVM kernels with MetaSchedule and cache the results")
    p.add_argument("file")
    p.add_argument("--target", default="tvm-cpu")
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--dim", action="append", metavar="NAME=INT")
    _common(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("ops", help="list the built-in ops with every argument, or show one op in full")
    p.add_argument("name", nargs="?", help="an op to show in full, with an example")
    p.set_defaults(func=cmd_ops)
    return ap


def main(argv: list[str] | None = None) -> int:
    from .diagnostics import SpecError, render_all
    from .fsutil import OutputError
    from .targets import TargetNotFound
    from .weights.report import WeightsError

    ap = build_parser()
    args = ap.parse_args(argv)
    handler: Callable = args.func
    try:
        return handler(args)
    except CheckError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_INTERNAL if e.internal else EXIT_SPEC
    except SpecError as e:
        print(render_all(e.diagnostics, getattr(e, "sources", None)), file=sys.stderr)
        return EXIT_SPEC
    except WeightsError as e:
        print(f"specc: error: {e}", file=sys.stderr)
        return EXIT_SPEC
    except (UsageError, OutputError, TargetNotFound) as e:
        print(f"specc: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - a bug in specc: say so plainly, no traceback unless asked
        import os

        if os.environ.get("SPECC_DEBUG"):
            raise
        print(f"specc: internal error: {type(e).__name__}: {e}\n"
              "this is a bug in specc, not in your spec; rerun with SPECC_DEBUG=1 for the traceback", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
