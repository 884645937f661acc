"""Benchmark: PyTorch emitted by specc vs hand-written references, same weights, same run.

    * GPT-2 small forward, 1x128 tokens       specs/gpt2.nn        vs tests/references/seq.py GPT2 (nanoGPT layout)
    * BERT-base forward, 1x128 tokens + mask  specs/bert_base.nn   vs tests/references/seq.py BertModel
    * GPT-2 small training step, 1x128        forward, next-token cross-entropy, backward, AdamW step

Hugging Face transformers models (built from a config, no download) join as a second reference when the package is
importable. Weights are copied from the reference into the emitted model and the outputs compared before timing.
Runs alternate between the models (A B A B ...) so that load changes on a shared machine hit both alike; the table
gives medians and minimums and the ratios specc / reference (< 1: the emitted code is faster). On a loaded machine
the minimums (the runs least disturbed) are the steadier comparison.

    python bench/seq_models.py [--threads 2] [--runs 15] [--models gpt2,bert,gpt2-train] [--clock cpu] [--fused]

`specc` is the module `specc compile` writes (the default level, every layer a module call); `--fused` races the
-O2 module (eager fusion: merged q/k/v, fused epilogues) too, with the same weights, as `specc -O2`.

On a shared, loaded machine, `--clock cpu` (process CPU time, all threads) is steadier than wall time.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import specc  # noqa: E402
from tests.references import seq as R  # noqa: E402

GPT2_NAMES = [(r"^transformer\.", "")]
BERT_NAMES = [
    (r"^embeddings\.LayerNorm", "embeddings_norm"), (r"^embeddings\.", ""), (r"^layers\.", "layer."),
    (r"\.attention\.query", ".self_attn.q_proj"), (r"\.attention\.key", ".self_attn.k_proj"),
    (r"\.attention\.value", ".self_attn.v_proj"), (r"\.attention_output", ".self_attn.out_proj"),
    (r"\.attention_LayerNorm", ".norm1"), (r"\.intermediate", ".ffn.w_1"), (r"\.output_LayerNorm", ".norm2"),
    (r"\.output\.", ".ffn.w_2."),
]


def copy_weights(ref: torch.nn.Module, ours: torch.nn.Module, names: list[tuple[str, str]]) -> None:
    def rename(k: str) -> str:
        for pat, rep in names:
            k = re.sub(pat, rep, k)
        return k

    ours.load_state_dict({rename(k): v for k, v in ref.state_dict().items()})


def hf_models():
    """(gpt2, bert) from Hugging Face transformers, built from configs; (None, None) if it is not installed."""
    try:
        import transformers

        gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(attn_implementation="sdpa"))
        bert = transformers.BertModel(transformers.BertConfig(attn_implementation="sdpa"), add_pooling_layer=True)
    except ImportError as e:  # not installed, or its lazy imports fail (e.g. a torchvision built for another torch)
        print(f"HF transformers unusable ({type(e).__name__}): skipped", file=sys.stderr)
        return None, None
    return gpt2.eval(), bert.eval()


CLOCK = time.perf_counter


def timed(fn) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def race(fns: dict[str, object], runs: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each fn, the fns taking turns (in reversed order every other round)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(runs):
        for k in (list(fns) if r % 2 == 0 else list(reversed(fns))):
            times[k].append(timed(fns[k]))
    return times


FUSED = False  # --fused: race the -O2 module too


def fused_twin(spec_path: Path, ours: torch.nn.Module, train: bool = False) -> torch.nn.Module | None:
    """The -O2 module of the same spec holding `ours`'s weights (the state_dict names are the same)."""
    if not FUSED:
        return None
    twin = specc.load(spec_path).to_torch(opt_level=2)
    twin.load_state_dict(ours.state_dict())
    return twin.train(train)


def check(name: str, got: torch.Tensor, want: torch.Tensor, atol: float = 1e-4) -> None:
    err = (got - want).abs().max().item()
    if err > atol:
        raise SystemExit(f"{name}: emitted output differs from the reference by {err:.2e}")


def bench_gpt2_forward(runs: int, hf) -> dict[str, float]:
    torch.manual_seed(0)
    ref = R.GPT2().eval()
    ours = specc.load(ROOT / "specs" / "gpt2.nn").to_torch().eval()
    copy_weights(ref, ours, GPT2_NAMES)
    fused = fused_twin(ROOT / "specs" / "gpt2.nn", ours)  # built outside inference mode: it caches derived weights
    idx = torch.randint(0, 50257, (1, 128))
    with torch.inference_mode():
        check("gpt2", ours(idx), ref(idx))
        fns = {"reference": lambda: ref(idx), "specc": lambda: ours(idx)}
        if fused is not None:
            check("gpt2 -O2", fused(idx), ref(idx))
            fns["specc -O2"] = lambda: fused(idx)
        if hf is not None:
            fns["hf"] = lambda: hf(idx)
        return race(fns, runs)


def bench_bert_forward(runs: int, hf) -> dict[str, float]:
    torch.manual_seed(0)
    ref = R.BertModel().eval()
    ours = specc.load(ROOT / "specs" / "bert_base.nn").to_torch().eval()
    copy_weights(ref, ours, BERT_NAMES)
    fused = fused_twin(ROOT / "specs" / "bert_base.nn", ours)
    ids, types = torch.randint(0, 30522, (1, 128)), torch.zeros(1, 128, dtype=torch.long)
    mask = torch.ones(1, 128, dtype=torch.bool)
    with torch.inference_mode():
        seq, pooled = ours(ids, types, mask)
        want_seq, want_pooled = ref(ids, types, mask.long())
        check("bert", seq, want_seq)
        check("bert pooled", pooled, want_pooled)
        fns = {"reference": lambda: ref(ids, types, mask.long()), "specc": lambda: ours(ids, types, mask)}
        if fused is not None:
            check("bert -O2", fused(ids, types, mask)[0], want_seq)
            fns["specc -O2"] = lambda: fused(ids, types, mask)
        if hf is not None:
            fns["hf"] = lambda: hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long())
        return race(fns, runs)


def train_step(model, opt, idx, logits_of=lambda out: out):
    def step():
        logits = logits_of(model(idx[:, :-1]))
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), idx[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def bench_gpt2_train(runs: int, hf) -> dict[str, float]:
    torch.manual_seed(0)
    ref = R.GPT2().train()
    ours = specc.load(ROOT / "specs" / "gpt2.nn").to_torch().train()
    copy_weights(ref, ours, GPT2_NAMES)
    idx = torch.randint(0, 50257, (1, 129))  # 128 inputs, 128 next-token targets
    fns = {
        "reference": train_step(ref, torch.optim.AdamW(ref.parameters(), lr=1e-4), idx),
        "specc": train_step(ours, torch.optim.AdamW(ours.parameters(), lr=1e-4), idx),
    }
    if (fused := fused_twin(ROOT / "specs" / "gpt2.nn", ours, train=True)) is not None:
        fns["specc -O2"] = train_step(fused, torch.optim.AdamW(fused.parameters(), lr=1e-4), idx)
    if hf is not None:
        hf.train()
        fns["hf"] = train_step(hf, torch.optim.AdamW(hf.parameters(), lr=1e-4), idx, lambda out: out.logits)
    return race(fns, runs)


BENCHES = {
    "gpt2": ("GPT-2 forward 1x128", bench_gpt2_forward, 0),
    "bert": ("BERT-base forward 1x128", bench_bert_forward, 1),
    "gpt2-train": ("GPT-2 train step 1x128", bench_gpt2_train, 0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--runs", type=int, default=15, help="timed calls per model (medians are reported)")
    ap.add_argument("--models", default=",".join(BENCHES))
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall time, or process CPU time")
    ap.add_argument("--fused", action="store_true", help="also race the -O2 (eager-fused) module")
    args = ap.parse_args()
    global CLOCK, FUSED
    FUSED = args.fused
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    hf = hf_models()
    print(f"torch {torch.__version__}, {args.threads} threads, {args.clock} clock, "
          f"load average {os.getloadavg()[0]:.2f}; "
          f"HF transformers: {'yes' if hf[0] is not None else 'not installed (skipped)'}")
    cols = ["reference", "specc"] + (["specc -O2"] if FUSED else []) + (["hf"] if hf[0] is not None else [])
    head = f"{'benchmark':<24} {'stat':<6}" + "".join(f" {c + ' ms':>13}" for c in cols) + f" {'specc/ref':>10}" + \
        (f" {'-O1/-O2':>8}" if FUSED else "") + (f" {'specc/HF':>9}" if "hf" in cols else "")
    print(head)
    print("-" * len(head))
    for key in args.models.split(","):
        title, fn, which = BENCHES[key]
        times = fn(args.runs, hf[which])
        for stat, agg in (("median", statistics.median), ("min", min)):
            t = {k: agg(v) for k, v in times.items()}
            line = f"{title if stat == 'median' else '':<24} {stat:<6}" + "".join(f" {t[c] * 1e3:>13.1f}" for c in cols)
            line += f" {t['specc'] / t['reference']:>10.2f}"
            line += f" {t['specc'] / t['specc -O2']:>8.3f}" if FUSED else ""
            line += f" {t['specc'] / t['hf']:>9.2f}" if "hf" in t else ""
            print(line, flush=True)


if __name__ == "__main__":
    main()
