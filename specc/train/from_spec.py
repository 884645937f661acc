"""The bridge from a loaded spec to `render_train_script`: what `specc train-script` needs in one call.

Kept apart from the renderer so that specc.train itself knows nothing of the IR: this file reads the model's
signature, dimension bounds and `train { ... }` section off the IR module, and the emitted source off the backend.
"""
from __future__ import annotations

from .render import render_train_script
from .signature import ModelIO, TensorSig


def model_io(module, sources=None) -> ModelIO:
    """The model graph's inputs and outputs, with the bounds its `where T <= ctx` clauses put on symbolic dims
    (and, given the spec's `sources`, the text and place of each bound, for the script's messages)."""
    from specc.naming import class_name

    graph = module.graph

    def sig(name: str) -> TensorSig:
        return TensorSig(name, graph[name].type.dtype,
                         tuple(d if isinstance(d, int) else str(d) for d in graph[name].type.shape))

    bounds = {sym: bound for sym, (bound, _span) in module.constraints.items() if isinstance(bound, int)}
    said = {}
    for sym, (_bound, span) in module.constraints.items():
        line = sources.line(span.file, span.line) if sources is not None and span is not None else None
        if line is not None and sym in bounds and span.end_line == span.line:
            said[sym] = (line[span.col - 1:span.end_col - 1].strip(), f"{span.file}:{span.line}:{span.col}")
    return ModelIO(class_name(module.name), [sig(n) for n in graph.inputs], [sig(n) for n in graph.outputs], bounds,
                   said)


def train_script_for(spec, **torch_options) -> str:
    """train.py for a loaded `specc.api.Spec`; raises TrainConfigError (see `.errors`, `.diagnostic()`) located
    at the spec's train settings."""
    module = spec.module
    settings = {key: value for key, (value, _span) in module.train.items()}
    spans = {key: span for key, (_value, span) in module.train.items()}
    io = model_io(module, spec.sources)
    return render_train_script(spec.torch_source(**torch_options), io.name, io, settings, spans)


def train_section_diagnostics(module, sources=None) -> list:
    """Diagnostics (E0403, located at the settings) for a model's `train` section: unknown keys (with the closest
    known one), values of the wrong type or range, and a task its inputs and outputs cannot serve."""
    from .config import TrainConfigError, parse_settings
    from .signature import resolve_task

    settings = {key: value for key, (value, _span) in module.train.items()}
    spans = {key: span for key, (_value, span) in module.train.items()}
    try:
        resolve_task(parse_settings(settings, spans), model_io(module, sources), spans)
    except TrainConfigError as err:
        # a problem about a setting the section leaves out (vocab_size for synthetic token data) points at the
        # section's first setting, or else at the model
        where = min((sp for sp in spans.values() if sp is not None), key=lambda sp: (sp.line, sp.col),
                    default=module.graph.span)
        for e in err.errors:
            e.span = e.span or where
        errors = sorted(err.errors, key=lambda e: (e.span is None, getattr(e.span, "line", 0), getattr(e.span, "col", 0)))
        return [e.diagnostic() for e in errors]
    return []
