"""Op families. Each module registers its ops in specc.ops.registry.REGISTRY."""
from .registry import REGISTRY, Attrs, OpDef, all_ops, get, register

__all__ = ["REGISTRY", "Attrs", "OpDef", "all_ops", "get", "register"]
