"""Helper code emitted model files carry, as real Python (see specc.ops.torch_rule.support_text)."""
