"""Helper code that emitted model files carry lives in real modules (specc/ops/support/): each imports, and the text
the registry puts in emitted files is exactly that module's definitions."""
import ast
import importlib
import pkgutil

import pytest

import specc.ops.support as support_pkg
from specc.ops.registry import all_ops
from specc.ops.torch_rule import support_text

NAMES = sorted(m.name for m in pkgutil.iter_modules(support_pkg.__path__))


@pytest.mark.parametrize("name", NAMES)
def test_support_module_imports_and_defines_what_it_emits(name):
    module = importlib.import_module(f"specc.ops.support.{name}")
    tree = ast.parse(support_text(name))
    assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body), "emitted text carries imports"
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert defined and all(hasattr(module, d) for d in defined)


def test_every_registry_snippet_comes_from_a_support_module():
    texts = {support_text(n) for n in NAMES}
    for op in all_ops().values():
        for snippet in (op.torch.support if op.torch else ()):
            assert snippet in texts, f"op {op.name!r} emits helper code kept as a string literal"
