"""specc: a declarative model-spec compiler.

    import specc
    spec = specc.load("specs/resnet18.nn", classes=10)   # parse, elaborate, shape-check
    print(spec.summary().params)
    model = spec.to_torch()                                # needs torch

Importing specc never imports torch or tvm; only the backends that need them do.
"""
from .api import Spec, SpecError, check, load
from .version import __version__

__all__ = ["Spec", "SpecError", "__version__", "check", "load"]
