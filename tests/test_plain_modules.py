"""The default emitted module is a plain PyTorch module tree: every layer is called through its module, so the
tools people plug into models work on it (forward hooks, FLOP counters, low-rank adapters), and -O2's eager fusion
changes nothing but `forward` (same state_dict at every level)."""
from __future__ import annotations

import pytest
from torch_util import SHRINK, SPECS, dim_env, load_small, random_inputs, spec_paths

import specc

torch = pytest.importorskip("torch")

PATHS = spec_paths()
IDS = [p.stem for p in PATHS]
# mixture-of-experts specs: enough tokens that every expert is routed some (an expert no token chooses does not run)
MOE_DIMS = {"B": 4, "T": 16}


def _inputs(spec, seed: int = 0):
    env = dim_env(spec)
    if any(n.target == "moe" for _, n, _, _ in spec.module.walk()):
        env = {k: min(MOE_DIMS.get(k, v), _bound(spec, k, MOE_DIMS.get(k, v))) for k, v in env.items()}
    return random_inputs(spec, env, seed), env


def _bound(spec, sym: str, default: int) -> int:
    bound = spec.module.constraints.get(sym)
    return bound[0] if bound is not None and isinstance(bound[0], int) else default


def _leaves(model) -> dict[str, torch.nn.Module]:
    """Modules without submodules; an empty ModuleList (a MoE without shared experts) is a container, never called."""
    containers = (torch.nn.ModuleList, torch.nn.ModuleDict)
    return {name: m for name, m in model.named_modules()
            if name and not list(m.children()) and not isinstance(m, containers)}


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_forward_hooks_fire_on_every_leaf_module(path):
    spec = load_small(path)
    torch.manual_seed(0)
    model = spec.to_torch()  # the default level
    leaves = _leaves(model)
    assert leaves, "no submodules at all"
    fired: set[str] = set()
    for name, m in leaves.items():
        m.register_forward_hook(lambda mod, args, out, name=name: fired.add(name))
    xs, _ = _inputs(spec)
    for mode in ("train", "eval"):
        fired.clear()
        getattr(model, mode)()
        with torch.set_grad_enabled(mode == "train"):
            model(*xs)
        missing = sorted(set(leaves) - fired)
        assert not missing, f"{path.stem} ({mode}): forward hooks never fired on {missing}"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_state_dict_is_the_same_at_every_level(path):
    spec = load_small(path)
    with torch.device("meta"):
        layouts = {level: [(k, tuple(v.shape)) for k, v in spec.to_torch(opt_level=level).state_dict().items()]
                   for level in (0, 1, 2)}
    assert layouts[0] == layouts[1], "-O1 (the default) changed the state_dict"
    # -O2 declares a fused layer where its fused call runs (after a residual's downsample conv), so the order of
    # keys may differ there; names and shapes may not (load_state_dict is by name)
    assert sorted(layouts[2]) == sorted(layouts[0]), "-O2 changed the state_dict's names or shapes"


# FlopCounterMode has formulas for the CUDA attention kernels and for matmuls/convs, not for the CPU kernels that
# attention and nn.LSTM run as here; these are the same counts (2 x multiply-accumulates of the matmuls inside).
def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _onednn_rnn_layer_flops(x, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    """One layer and direction of nn.LSTM: every position runs [4H, I] and [4H, H] matrix-vector products."""
    positions = x[0] * x[1]
    return 2 * positions * (w_ih[0] * w_ih[1] + w_hh[0] * w_hh[1])


CPU_KERNELS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
               torch.ops.aten.mkldnn_rnn_layer: _onednn_rnn_layer_flops}
# Switch drops tokens beyond an expert's capacity (capacity_factor * tokens / experts); specc counts the cost of
# routing every token (the capacity is a bound, not an expectation), so a large capacity makes them comparable.
FLOP_OVERRIDES = {"switch_base_8": {"capacity_factor": 100.0}}


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_flop_counter_matches_inspect(path):
    from torch.utils.flop_counter import FlopCounterMode

    spec = specc.load(path, overrides={**SHRINK.get(path.stem, {}), **FLOP_OVERRIDES.get(path.stem, {})})
    torch.manual_seed(0)
    model = spec.to_torch().eval()
    xs, env = _inputs(spec)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CPU_KERNELS) as counter:
        model(*xs)
    counted = counter.get_total_flops()
    want = 2 * spec.summary().eval_macs(env)
    assert counted == want, f"{path.stem}: FlopCounterMode counts {counted:,} FLOPs, specc inspect {want:,} (2 x MACs)"


# ---- a low-rank adapter on BERT's query/value projections -------------------------------------------------------

class LoRA(torch.nn.Module):
    """W x + (alpha / r) * B A x with A random and B zero, as PEFT initialises it (Hu et al. 2021)."""

    def __init__(self, base: torch.nn.Linear, r: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        self.base = base
        self.a = torch.nn.Parameter(torch.randn(r, base.in_features) / r)
        self.b = torch.nn.Parameter(torch.zeros(base.out_features, r))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.a.T @ self.b.T) * self.scale


def _wrap_qv(model) -> list[str]:
    """Replace every linear whose name ends in q/v projection names with a LoRA wrapper; the names replaced."""
    targets = [name for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ("q", "v", "query", "value",
                                                                                   "q_proj", "v_proj")]
    for name in targets:
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, attr, LoRA(getattr(owner, attr)))
    return targets


def test_lora_on_bert_query_and_value_changes_the_output_and_trains():
    spec = load_small(SPECS / "bert_base.nn")
    torch.manual_seed(0)
    model = spec.to_torch()
    xs, _ = _inputs(spec)
    model.eval()
    with torch.no_grad():
        before = _first(model(*xs)).clone()
    wrapped = _wrap_qv(model)
    assert len(wrapped) >= 2 * 2, f"expected q and v projections in every layer, wrapped {wrapped}"
    for p in model.parameters():
        p.requires_grad_(False)
    adapters = [p for m in model.modules() if isinstance(m, LoRA) for p in (m.a, m.b)]
    for p in adapters:
        p.requires_grad_(True)
    with torch.no_grad():
        same = _first(model(*xs))
    torch.testing.assert_close(same, before)  # B = 0: the adapter starts as the identity
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRA):
                m.b.normal_(std=0.1)
        changed = _first(model(*xs))
    assert (changed - before).abs().max() > 1e-3, "the adapters did not change the output: the layer was bypassed"
    # train only the adapters on a fixed target; the loss goes down and every adapter gets a gradient
    model.train()
    target = torch.randn_like(changed)
    opt = torch.optim.Adam(adapters, lr=1e-2)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(_first(model(*xs)), target)
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapters), "an adapter got no gradient"
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], f"loss did not decrease: {losses[0]:.4f} -> {losses[-1]:.4f}"


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out
