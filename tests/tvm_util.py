"""Helpers shared by the TVM backend tests: PyTorch reference modules with non-trivial weights, and comparison."""
from __future__ import annotations

import numpy as np


def reference_model(spec, seed: int = 0, **options):
    """The emitted PyTorch module (eval mode) with seeded weights, random batchnorm statistics and non-zero biases,
    so that no part of a layer is the identity by accident."""
    import torch

    torch.manual_seed(seed)
    model = spec.to_torch(**options).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
    return model


def outputs(value) -> list:
    return list(value) if isinstance(value, (tuple, list)) else [value]


def max_rel_diff(got, want) -> float:
    """max |got - want| / max |want| over all outputs (0 for empty outputs)."""
    worst = 0.0
    for g, w in zip(outputs(got), outputs(want)):
        g = g.detach().numpy() if hasattr(g, "detach") else np.asarray(g)
        w = w.detach().numpy() if hasattr(w, "detach") else np.asarray(w)
        assert g.shape == w.shape, (g.shape, w.shape)
        if w.size:
            worst = max(worst, float(np.abs(g.astype(np.float64) - w).max() / max(np.abs(w).max(), 1e-12)))
    return worst


def runner_model(text: str) -> dict:
    """The MODEL data line of a runner script (or of runner_template.py), read back as data."""
    import ast

    node = next(s for s in ast.parse(text).body if isinstance(s, ast.Assign) and getattr(s.targets[0], "id", "") == "MODEL")
    return ast.literal_eval(node.value)
