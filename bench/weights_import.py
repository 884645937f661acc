"""Importing a GPT-2-small-sized checkpoint: `specc weights import` vs transformers `from_pretrained`, same files.

    python bench/weights_import.py [--rounds 3] [--layers 12]

Makes a GPT2LMHeadModel checkpoint (random weights, GPT-2 small's 124M parameters, ~500 MB of safetensors) in a
temporary folder, then runs each contender in its own fresh process, interleaved round by round (specc first in odd
rounds, transformers first in even ones):

  specc import   import_weights(specs/gpt2.nn, folder, out.safetensors): config.json -> sizes, map, Conv1D
                 transposes, tied lm_head, written to disk (what `specc weights import` does)
  specc module   specc.load(...).to_torch(weights=folder): the same conversion straight into a built module
  transformers   GPT2LMHeadModel.from_pretrained(folder)

Each child reports the call's wall time (after its imports, torch._dynamo included: transformers imports it with its
model classes, and building specc's layout on the meta device pulls it in) and its peak resident memory above what
it held before the call (VmHWM minus VmRSS after imports; memory-mapped file pages count once touched). The
process column is each child's whole wall time, imports included.
Printed: medians and minimums, the time ratio to transformers, and peak / checkpoint size (target <= 1.3).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, sys, time
sys.path.insert(0, {tests!r})
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
kind, folder, out, spec = sys.argv[1:5]
import torch
import torch._dynamo  # transformers imports it with its model classes; specc's meta-device layout pulls it in too
if kind == "transformers":
    from weights_util import transformers
    tf = transformers()
    base = status("VmRSS"); t0 = time.perf_counter()
    model = tf.GPT2LMHeadModel.from_pretrained(folder)
else:
    import specc
    from specc.api import import_weights
    base = status("VmRSS"); t0 = time.perf_counter()
    if kind == "specc-import":
        import_weights(spec, folder, out)
    else:
        model = specc.load(spec, **import_weights(spec, folder, None).from_config).to_torch(weights=folder)
dt = time.perf_counter() - t0
peak = status("VmHWM")  # this process's high-water mark (ru_maxrss would include the parent's, from fork)
print(json.dumps({{"time": dt, "peak": peak - base}}))
"""

KINDS = ("specc-import", "specc-module", "transformers")


_MAKE = r"""
import sys
sys.path.insert(0, {tests!r})
from weights_util import transformers
tf = transformers()
import torch
torch.manual_seed(0)
tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=int(sys.argv[2]))).save_pretrained(sys.argv[1])
"""


def make_checkpoint(folder: Path, layers: int) -> int:
    """In a child process, so this one stays small."""
    subprocess.run([sys.executable, "-c", _MAKE.format(tests=str(REPO / "tests")), str(folder), str(layers)],
                   check=True, capture_output=True)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def run_child(kind: str, folder: Path, out: Path) -> dict:
    code = _CHILD.format(tests=str(REPO / "tests"))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, kind, str(folder), str(out), str(REPO / "specs" / "gpt2.nn")],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process"] = wall
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", type=int, default=12, help="GPT-2 small has 12")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} on {os.cpu_count()} cpus: the machine is busy, times are noisy")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2"
        size = make_checkpoint(folder, args.layers)
        print(f"checkpoint: GPT2LMHeadModel, {args.layers} layers, {size / 2**20:.0f} MiB of safetensors")
        results: dict[str, list[dict]] = {k: [] for k in KINDS}
        for r in range(args.rounds):
            order = KINDS if r % 2 == 0 else tuple(reversed(KINDS))
            for kind in order:
                res = run_child(kind, folder, Path(tmp) / f"out-{r}.safetensors")
                results[kind].append(res)
                print(f"  round {r + 1} {kind:13s} {res['time']:6.2f} s call, {res['process']:6.2f} s process, "
                      f"peak +{res['peak'] / 2**20:6.0f} MiB")
    ref = statistics.median(x["time"] for x in results["transformers"])
    ref_proc = statistics.median(x["process"] for x in results["transformers"])
    print(f"\n{'':13s} {'call median':>11s} {'min':>6s} {'vs tf':>6s} {'process':>8s} {'vs tf':>6s} "
          f"{'peak/ckpt':>9s}")
    for kind in KINDS:
        times = [x["time"] for x in results[kind]]
        proc = statistics.median(x["process"] for x in results[kind])
        peak = max(x["peak"] for x in results[kind])
        print(f"{kind:13s} {statistics.median(times):10.2f}s {min(times):5.2f}s {statistics.median(times) / ref:5.2f}x "
              f"{proc:7.2f}s {proc / ref_proc:5.2f}x {peak / size:8.2f}x")


if __name__ == "__main__":
    main()
