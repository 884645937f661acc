"""The emitted `moe` layer against the loop-over-experts reference, at realistic token counts, in one run.

    python bench/moe.py                      # 4096 tokens, d 1024, 8 SwiGLU experts of width 2816, top-2
    python bench/moe.py --tokens 16384 --device cuda --dtype bfloat16 --skip-reference
    python bench/moe.py --tvm --threads 1 --skip-reference   # + specc TVM (routed and dense) and onnxruntime

Every contender gets the same weights and the same input, outputs are checked against each other, and times are
medians of --repeat forwards, one of each contender per round (the loop reference runs --reference-repeat times:
it is slow by design); at one CPU thread, thread CPU time (robust to other processes), else wall time. Contenders:

  specc      the emitted MixtureOfExperts: sort (token, slot) pairs by expert, one call per expert on its
             contiguous slice, index_add to combine
  reference  tests/references/moe.py: Python loops over experts and tokens (the test oracle)
  dense      every expert on every token, weighted by a dense [N, E] gate (what small MoE codebases often do)
  hf         transformers' MixtralSparseMoeBlock, when transformers is installed
  (--tvm) tvm          specc.load(...).to_tvm("tvm-cpu"): each expert on its routed tokens only (the default)
          tvm dense    the same with the dense lowering forced (every expert on every token, gated): what specc's
                       TVM backend did before routing
          onnxruntime  the emitted layer exported in its exportable routed form (bench/onnx_moe.py), opset 18
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from specc.api import loads  # noqa: E402
from tests.references.moe import MoELayer  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))

SPEC = """
import "std/transformer.nn"
model Bench(d: int, hidden: int, experts: int, top_k: int) {
  input x: f32[B, T, d]
  output y = x -> moe(SwiGLU(hidden), experts, top_k, renormalize=true)
}
"""


def bench_spec(a):
    return loads(SPEC, "bench.nn", d=a.d, hidden=a.hidden, experts=a.experts, top_k=a.top_k)


def emitted_layer(a) -> torch.nn.Module:
    return bench_spec(a).to_torch().moe


def copy_from(ref: MoELayer, layer: torch.nn.Module) -> None:
    with torch.no_grad():
        layer.router.weight.copy_(ref.router.weight)
        for mine, theirs in zip(layer.experts, ref.experts):
            for name in ("w1", "w2", "w3"):
                getattr(mine, name).weight.copy_(getattr(theirs, name).weight)


class Dense(torch.nn.Module):
    """All experts on all tokens, weights stacked [E, ...], combined with a dense gate."""

    def __init__(self, ref: MoELayer) -> None:
        super().__init__()
        self.router, self.k = ref.router, ref.top_k
        self.w1 = torch.nn.Parameter(torch.stack([e.w1.weight.t() for e in ref.experts]))  # [E, d, h]
        self.w3 = torch.nn.Parameter(torch.stack([e.w3.weight.t() for e in ref.experts]))
        self.w2 = torch.nn.Parameter(torch.stack([e.w2.weight.t() for e in ref.experts]))  # [E, h, d]

    def forward(self, x):
        probs = self.router(x).softmax(-1)
        w, idx = probs.topk(self.k, dim=-1)
        gate = torch.zeros_like(probs).scatter(1, idx, w / w.sum(-1, keepdim=True))  # [N, E]
        h = torch.nn.functional.silu(torch.einsum("nd,edh->enh", x, self.w1)) * torch.einsum("nd,edh->enh", x, self.w3)
        return torch.einsum("enh,ehd,ne->nd", h, self.w2, gate)


def hf_block(ref: MoELayer, a):
    try:
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    except (ImportError, RuntimeError) as err:  # RuntimeError: a torchvision that does not fit this torch
        print(f"hf: skipped ({type(err).__name__}: {str(err).splitlines()[0][:80]})")
        return None
    cfg = MixtralConfig(hidden_size=a.d, intermediate_size=a.hidden, num_local_experts=a.experts,
                        num_experts_per_tok=a.top_k)
    block = MixtralSparseMoeBlock(cfg)
    state = {"gate.weight": ref.router.weight}
    for i, e in enumerate(ref.experts):
        state.update({f"experts.{i}.w1.weight": e.w1.weight, f"experts.{i}.w2.weight": e.w2.weight,
                      f"experts.{i}.w3.weight": e.w3.weight})
    try:
        block.load_state_dict(state)
    except RuntimeError as err:  # newer transformers stack the experts: not worth chasing its layout here
        print(f"hf: skipped ({str(err).splitlines()[0]})")
        return None

    def run(x):
        out = block(x.unsqueeze(0))
        return (out[0] if isinstance(out, tuple) else out).squeeze(0)
    return run


def tvm_peers(a, layer: torch.nn.Module) -> dict:
    """specc's TVM build of the layer, routed (default) and dense (rules.moe.rowwise patched to say no)."""
    from specc.backends.tvm.codegen import configure_threads
    from specc.backends.tvm.rules import moe as moe_rule

    if a.threads:
        configure_threads(a.threads)
    spec = bench_spec(a)
    weights = {f"moe.{k}": v for k, v in layer.state_dict().items()}
    peers = {}
    for name, rowwise in (("tvm", moe_rule.rowwise), ("tvm dense", lambda *_: False)):
        saved, moe_rule.rowwise = moe_rule.rowwise, rowwise
        try:
            t = time.perf_counter()
            compiled = spec.to_tvm("tvm-cpu", weights=weights)
            print(f"{name}: compiled in {time.perf_counter() - t:.0f} s")
        finally:
            moe_rule.rowwise = saved
        peers[name] = lambda x, c=compiled: torch.from_numpy(c(x.unsqueeze(0).numpy())).squeeze(0)
    return peers


def onnxruntime_peer(a, layer: torch.nn.Module, x: torch.Tensor):
    import tempfile
    import warnings

    import onnxruntime as ort
    from onnx_moe import exportable

    path = Path(tempfile.mkdtemp()) / "moe.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(exportable(layer), (x,), str(path), opset_version=18, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads or torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda t: torch.from_numpy(sess.run(None, {name: t.numpy()})[0])


def interleaved(contenders: dict, x, repeats: dict[str, int], sync, clock) -> dict[str, tuple[float, torch.Tensor]]:
    """name -> (median seconds, output): one call of each contender per round, so load drifting on a shared
    machine hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    outs: dict[str, torch.Tensor] = {}
    for r in range(max(repeats.values())):
        for name, fn in contenders.items():
            if r < repeats[name]:
                sync()
                t = clock()
                outs[name] = fn(x)
                sync()
                times[name].append(clock() - t)
    return {name: (statistics.median(times[name]), outs[name]) for name in contenders}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--d", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=2816)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--reference-repeat", type=int, default=1)
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--tvm", action="store_true", help="add specc TVM (routed and dense) and onnxruntime (CPU, fp32)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev, dtype = torch.device(a.device), getattr(torch, a.dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    torch.manual_seed(0)
    ref = MoELayer(a.d, a.hidden, a.experts, top_k=a.top_k, renormalize=True).to(dev, dtype).eval()
    mine = emitted_layer(a).to(dev, dtype).eval()
    copy_from(ref, mine)
    dense = Dense(ref).to(dev, dtype).eval()
    x = torch.randn(a.tokens, a.d, device=dev, dtype=dtype)

    contenders = {"specc": mine, "dense": dense}
    hf = hf_block(ref, a)
    if hf is not None:
        contenders["hf"] = hf
    if a.tvm:
        contenders.update(tvm_peers(a, mine))
        contenders["onnxruntime"] = onnxruntime_peer(a, mine, x)
    if not a.skip_reference:
        contenders["reference"] = lambda t: ref(t)[0]
    # one CPU thread: every contender computes on the calling thread, whose CPU time other processes do not inflate
    cpu_time = dev.type == "cpu" and torch.get_num_threads() == 1
    clock = time.thread_time if cpu_time else time.perf_counter
    print(f"moe layer: {a.tokens} tokens, d {a.d}, {a.experts} SwiGLU experts of width {a.hidden}, top-{a.top_k}; "
          f"{a.device} {a.dtype}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{'thread CPU time' if cpu_time else 'wall time'}, load average {os.getloadavg()[0]:.1f}")
    repeats = {name: a.reference_repeat if name == "reference" else a.repeat for name in contenders}
    with torch.no_grad():
        for name, fn in contenders.items():
            fn(x if name == "onnxruntime" else x[:64])  # warm up; the exported ONNX graph has x's shape
        results = interleaved(contenders, x, repeats, sync, clock)
    base_t, base_out = results["specc"]
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    print(f"{'':12}{'median ms':>12}{'vs specc':>12}{'max |diff|':>14}")
    for name, (t, out) in results.items():
        diff = (out.float() - base_out.float()).abs().max().item()
        flag = "" if diff <= tol * max(1.0, base_out.float().abs().max().item()) else "  MISMATCH"
        print(f"{name:12}{t * 1e3:12.1f}{t / base_t:11.2f}x{diff:14.2e}{flag}")
    macs = a.tokens * a.top_k * 3 * a.d * a.hidden
    print(f"specc: {2 * macs / base_t / 1e9:.1f} GFLOP/s on the routed experts ({2 * macs / 1e9:.1f} GFLOP)")


if __name__ == "__main__":
    main()
