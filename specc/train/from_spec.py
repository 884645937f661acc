"""The bridge from a loaded spec to `render_train_script`: what `specc train-script` needs in one call.

Kept apart from the renderer so that specc.train itself knows nothing of the IR: this file reads the model's
signature, dimension bounds and `train { ... }` section off the IR module, and the emitted source off the backend.
"""
from __future__ import annotations

from .render import render_train_script
from .signature import ModelIO, TensorSig


def model_io(module) -> ModelIO:
    """The model graph's inputs and outputs, with the bounds its `where T <= ctx` clauses put on symbolic dims."""
    from specc.naming import class_name

    graph = module.graph

    def sig(name: str) -> TensorSig:
        return TensorSig(name, graph[name].type.dtype,
                         tuple(d if isinstance(d, int) else str(d) for d in graph[name].type.shape))

    bounds = {sym: bound for sym, (bound, _span) in module.constraints.items() if isinstance(bound, int)}
    return ModelIO(class_name(module.name), [sig(n) for n in graph.inputs], [sig(n) for n in graph.outputs], bounds)


def train_script_for(spec, **torch_options) -> str:
    """train.py for a loaded `specc.api.Spec`; raises TrainConfigError (see `.errors`, `.diagnostic()`) located
    at the spec's train settings."""
    module = spec.module
    settings = {key: value for key, (value, _span) in module.train.items()}
    spans = {key: span for key, (_value, span) in module.train.items()}
    io = model_io(module)
    return render_train_script(spec.torch_source(**torch_options), io.name, io, settings, spans)
