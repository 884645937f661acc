"""Per-kernel profile of one model of bench/tvm_vs_torch.py: where specc's TVM build and onnxruntime spend their time.

    python bench/tvm_profile.py --model vit -D vit.layers=2 --threads 1 [--mcpu haswell] [--static]

TVM: the Relax VM's instrument hook around every call (thread CPU time at 1 thread, else wall time), summed per
kernel per model call, median over `--rounds` calls; onnxruntime: its own profiler (per node, summed per op type and per node name). Both with one thread by
default, so wall time is the work of that thread; on a shared machine run it when the load is low, or compare
ratios only. Kernels are listed by time with the schedule specc gave them (``last_stats()``).

    python bench/tvm_profile.py --model resnet18 --switch SPECC_CONV_PREFETCH --rounds 16

`--switch VAR` compares two TVM builds instead (VAR=0 and VAR=1 set during the build): both run interleaved, call
by call, and every kernel call is listed in call order with its median time in each build and their ratio.
`--vs-static` does the same for the static and the symbolic build (where symbolic dims cost time).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path


def _threads(argv):
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
    return "1"


for _var in ("TVM_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, _threads(sys.argv))

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))


def tvm_profile(model, inputs, rounds: int, threads: int) -> dict[str, tuple[float, int]]:
    """kernel name -> (median over rounds of its summed time per model call in ms, calls per model call)."""
    import time

    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(model.executable, tvm.cpu(), memory_cfg="pooled")
    vin = [tvm.runtime.tensor(x.numpy()) for x in inputs]
    clock = time.thread_time if threads == 1 else time.perf_counter
    tot: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.defaultdict(int)
    start: list[float] = [0.0]

    def instrument(func, name, before, ret, *args):
        if before:
            start[0] = clock()
        else:
            tot[str(name)] += (clock() - start[0]) * 1e3
            calls[str(name)] += 1
        return 0

    for _ in range(2):
        vm["main"](*vin)
    vm.set_instrument(tvm.runtime.convert(instrument) if hasattr(tvm.runtime, "convert") else instrument)
    per: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(rounds):
        tot.clear()
        vm["main"](*vin)
        for k, v in tot.items():
            per[k].append(v)
    return {k: (float(np.median(v)), calls[k] // rounds) for k, v in per.items()}


def switch_profile(builds: dict, inputs, rounds: int, threads: int) -> tuple[dict, dict]:
    """Interleaved per-call profile of several builds of one model: (build -> "index name" -> median ms, build ->
    median total ms of the kernels). The builds alternate call by call (in reverse order every other round), so the
    machine's load falls on each alike."""
    import time

    import tvm
    from tvm import relax

    clock = time.thread_time if threads == 1 else time.perf_counter
    calls: list[tuple[str, float]] = []
    start: list[float] = [0.0]

    def instrument(func, name, before, ret, *args):
        if before:
            start[0] = clock()
        else:
            calls.append((str(name), (clock() - start[0]) * 1e3))
        return 0

    vin = [tvm.runtime.tensor(x.numpy()) for x in inputs]
    vms = {}
    for key, model in builds.items():
        vms[key] = relax.VirtualMachine(model.executable, tvm.cpu(), memory_cfg="pooled")
        vms[key]["main"](*vin)
        vms[key].set_instrument(instrument)
    per = {k: collections.defaultdict(list) for k in vms}
    totals: dict[str, list[float]] = {k: [] for k in vms}
    order = list(vms.items())
    for r in range(rounds):
        # every other round in reverse order: a build always called right after the other would carry whatever
        # that position costs (the unchanged kernels of the second build measured 5% slower in one R18 run)
        for key, vm in (order if r % 2 == 0 else order[::-1]):
            calls.clear()
            vm["main"](*vin)
            kernels = [(n, t) for n, t in calls if not n.startswith("vm.builtin")]
            seen: dict[str, int] = collections.Counter()
            for i, (n, t) in enumerate(kernels):
                # "name #k": the k-th call of that kernel, so that builds whose kernel lists differ (a static build
                # fuses more, a symbolic one adds shape functions) still line up call by call
                seen[n] += 1
                per[key][f"{i:03d} {n} #{seen[n]}"].append(t)
            totals[key].append(sum(t for _, t in kernels))
            time.sleep(0.01)
    med = {k: {n: float(np.median(v)) for n, v in d.items()} for k, d in per.items()}
    return med, {k: float(np.median(v)) for k, v in totals.items()}


def print_switch(var: str, med: dict, totals: dict, min_ms: float = 0.05, labels=("0", "1")) -> None:
    """The per-call table of switch_profile's two builds `labels` (keys of med / totals): `VAR=label` columns, or
    the labels themselves when var is empty."""
    a_key, b_key = labels
    off, on = med[a_key], med[b_key]
    name_a, name_b = (f"{var}={a_key}", f"{var}={b_key}") if var else labels
    print(f"kernels' total, median: {name_a} {totals[a_key]:.2f} ms, {name_b} {totals[b_key]:.2f} ms "
          f"({totals[b_key] / totals[a_key]:.3f}x)")
    w = max(12, len(name_a) + 2, len(name_b) + 2)
    print(f"{'call  kernel':<62}{name_a:>{w}}{name_b:>{w}}{'ratio':>7}")
    # by call, in the first build's order; keys are "index name #k", matched on "name #k"
    def by_call(d):
        return {k.split(" ", 1)[1]: (int(k.split(" ", 1)[0]), v) for k, v in d.items()}

    off_c, on_c = by_call(off), by_call(on)
    order = sorted(set(off_c) | set(on_c), key=lambda n: (off_c.get(n) or on_c.get(n))[0])
    for call in order:
        a, b = (off_c[call][1] if call in off_c else None), (on_c[call][1] if call in on_c else None)
        name = f"{(off_c.get(call) or on_c.get(call))[0]:03d} {call}"
        if a is None or b is None:
            print(f"{name[:61]:<62}{f'{a:.3f}' if a is not None else '-':>{w}}{f'{b:.3f}' if b is not None else '-':>{w}}")
        elif max(a, b) >= min_ms:
            print(f"{name[:61]:<62}{a:>{w}.3f}{b:>{w}.3f}{b / a:>7.2f}")


def ort_profile(eager, inputs, threads: int, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    import onnxruntime as ort
    from onnx_moe import exportable
    from tvm_vs_torch import onnx_export

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        why = onnx_export(exportable(eager), inputs, path)
        if why:
            raise SystemExit(f"onnxruntime: {why}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs)}
        for _ in range(2):
            sess.run(None, feed)
        for _ in range(rounds):
            sess.run(None, feed)
        prof = json.loads(Path(sess.end_profiling()).read_text())
    by_type: dict[str, float] = collections.defaultdict(float)
    by_node: dict[str, float] = collections.defaultdict(float)
    for ev in prof:
        if ev.get("cat") != "Node" or not ev["name"].endswith("_kernel_time"):
            continue
        ms = ev["dur"] / 1e3 / (rounds + 2)
        by_type[ev["args"]["op_name"]] += ms
        by_node[ev["name"][: -len("_kernel_time")]] += ms
    return dict(by_type), dict(by_node)


def main() -> None:
    from tvm_vs_torch import MODELS, SHRUNK, no_zero_params, parse_defines

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help=", ".join(MODELS))
    ap.add_argument("-D", dest="defines", action="append")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--mcpu", default=None)
    ap.add_argument("--static", action="store_true", help="static dims (default: symbolic)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--switch", default=None, help="environment variable: compare the builds with VAR=0 and VAR=1")
    ap.add_argument("--vs-static", action="store_true",
                    help="compare the static and the symbolic build, interleaved call by call (with --switch: "
                         "under VAR=1)")
    args = ap.parse_args()
    from torch_util import random_inputs

    import specc  # noqa: F401
    from specc.backends.tvm.schedules import last_stats

    threads = int(args.threads)
    torch.set_num_threads(threads)
    defines = parse_defines(args.defines)
    ov = {**SHRUNK.get(args.model, {}), **defines.get(args.model, {})}
    loader, dims = MODELS[args.model]
    spec = loader(ov)
    inputs = random_inputs(spec, dims, seed=0)
    torch.manual_seed(0)
    eager = no_zero_params(spec.to_torch().eval())
    target = "tvm-cpu"
    if args.mcpu:
        from specc.targets import load_target

        target = load_target("tvm-cpu").model_copy(update={"mcpu": args.mcpu})
    if args.vs_static:
        from env_ab import build

        env = {args.switch: "1"} if args.switch else {}
        builds = {"static": build(spec, eager, env, target, dims), "symbolic": build(spec, eager, env, target)}
        print(f"== {args.model} ({ov}), static vs symbolic dims{f' ({args.switch}=1)' if env else ''}, "
              f"{threads} thread(s), mcpu {args.mcpu or 'host'}; load {os.getloadavg()[0]:.1f}")
        print_switch("", *switch_profile(builds, inputs, args.rounds, threads), labels=("static", "symbolic"))
        return
    if args.switch:
        from env_ab import build

        builds = {value: build(spec, eager, {args.switch: value}, target, dims if args.static else None)
                  for value in ("0", "1")}
        print(f"== {args.model} ({ov}), {threads} thread(s), mcpu {args.mcpu or 'host'}; load "
              f"{os.getloadavg()[0]:.1f}")
        print_switch(args.switch, *switch_profile(builds, inputs, args.rounds, threads))
        return
    model = spec.to_tvm(target, weights=eager, dims=dims if args.static else None)
    sched = last_stats().get("schedules", {})
    tvm_ms = tvm_profile(model, inputs, args.rounds, threads)
    by_type, by_node = ort_profile(eager, inputs, threads, args.rounds)
    print(f"== {args.model} ({ov}), {'static' if args.static else 'symbolic'} dims, {threads} thread(s), "
          f"mcpu {args.mcpu or 'host'}; load {os.getloadavg()[0]:.1f}")
    total = sum(v for v, _ in tvm_ms.values())
    print(f"TVM kernels total {total:.2f} ms; onnxruntime nodes total {sum(by_type.values()):.2f} ms")
    print(f"{'TVM kernel':<58}{'ms':>8}{'calls':>6}  schedule")
    for k, (v, n) in sorted(tvm_ms.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"{k[:57]:<58}{v:>8.3f}{n:>6}  {sched.get(k, '')}")
    print(f"\n{'onnxruntime op type':<40}{'ms':>8}")
    for k, v in sorted(by_type.items(), key=lambda kv: -kv[1]):
        print(f"{k:<40}{v:>8.3f}")
    print(f"\n{'onnxruntime node':<58}{'ms':>8}")
    for k, v in sorted(by_node.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{k[:57]:<58}{v:>8.3f}")


if __name__ == "__main__":
    main()
