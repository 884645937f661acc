"""Hostile specs (tests/hostile/*.nn): each is rejected with a located error, or emits a file that does only what
the spec describes.

A corpus file's first line says which: `# expect: emit` or `# expect: reject E0xxx` (`# run: no` skips building the
model). An emitted file must pass three checks:

* its AST holds only the constructs the emitter writes: imports of torch/dataclasses/math, classes, methods; every
  global name it reads is one it defines or a harmless builtin; no dunder attribute other than `super().__init__`;
* `ruff check` passes (catches redefinitions and undefined names);
* importing it, building the model and running forward under an audit hook raises no event except the `compile`
  and `exec` that loading a module with dataclasses does; sys.modules gains only the module itself.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
from torch_util import REPO, dim_env, n_params, random_inputs, ruff_check

import specc
from specc.api import CheckError
from specc.diagnostics import SpecError

torch = pytest.importorskip("torch")

CORPUS = Path(__file__).parent / "hostile"
CASES = sorted(CORPUS.glob("*.nn"))


def expectation(path: Path) -> tuple[str, str | None, bool]:
    head = path.read_text().splitlines()[:3]
    m = re.fullmatch(r"# expect: (emit|reject)(?: (E\d{4}))?", head[0])
    assert m, f"{path.name}: first line must be `# expect: emit` or `# expect: reject E0xxx`"
    return m.group(1), m.group(2), "# run: no" not in head


EMIT = [p for p in CASES if expectation(p)[0] == "emit"]
REJECT = [p for p in CASES if expectation(p)[0] == "reject"]


# ---- what an emitted file may contain ---------------------------------------------------------------------------

IMPORTS = {"import torch", "import math", "import torch.nn.functional as F", "from torch import nn",
           "from dataclasses import dataclass"}
# builtins emitted code may read; exec, eval, open, __import__, getattr-with-a-spec-string ... are not among them
SAFE_BUILTINS = {"super", "range", "sum", "float", "int", "len", "ValueError", "isinstance", "tuple", "min", "max",
                 "getattr"}


def _helpers() -> set[str]:
    """Top-level definitions that op rules put in emitted files (`TorchRule.support`): fixed registry text that no
    spec can change, so they are exempt from the checks below, but only when they match the registry verbatim."""
    from specc.ops.registry import all_ops

    out = set()
    for op in all_ops().values():
        for snippet in op.torch.support if op.torch else ():
            out |= {ast.dump(n) for n in ast.parse(snippet).body}
    return out


HELPERS = _helpers()


def check_ast(source: str) -> None:
    tree = ast.parse(source)
    defined = {"torch", "nn", "F", "math", "dataclass"}
    body = []
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.Assign)) and ast.dump(node) in HELPERS:
            defined |= {node.name} if not isinstance(node, ast.Assign) else {t.id for t in node.targets}
            continue
        body.append(node)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            assert ast.unparse(node) in IMPORTS, ast.unparse(node)
        elif isinstance(node, ast.ClassDef):
            defined.add(node.name)
            _check_class(node)
        else:
            assert _is_docstring(node), f"top-level statement: {ast.unparse(node)[:80]}"
    spec_code = ast.Module(body=body, type_ignores=[])
    for fn in ast.walk(spec_code):
        if isinstance(fn, ast.FunctionDef):
            _check_scope(fn, defined)
    for node in ast.walk(spec_code):
        assert not isinstance(node, (ast.Global, ast.Nonlocal, ast.Delete, ast.With, ast.Try, ast.While,
                                     ast.Lambda, ast.Await, ast.Yield, ast.YieldFrom)), ast.unparse(node)[:80]
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            assert node in body, f"import inside a function: {ast.unparse(node)}"
        if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            assert node.attr == "__init__" and ast.unparse(node.value) == "super()", ast.unparse(node)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "getattr":
            assert ast.unparse(node.args[1]) == "'last_aux_loss'", ast.unparse(node)
        if isinstance(node, ast.Raise):
            assert ast.unparse(node.exc).startswith("ValueError("), ast.unparse(node)


def _is_docstring(node) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _check_class(cls: ast.ClassDef) -> None:
    for dec in cls.decorator_list:
        assert ast.unparse(dec) == "dataclass(frozen=True)", ast.unparse(dec)
    for base in cls.bases:
        assert ast.unparse(base) == "nn.Module", ast.unparse(base)
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign):  # a config field: a literal (float('nan') is the one call allowed)
            assert ast.unparse(stmt.annotation) in {"int", "float", "str", "bool", "tuple", "None"}, ast.unparse(stmt)
            calls = [n for n in ast.walk(stmt.value) if isinstance(n, ast.Call)]
            assert all(ast.unparse(c.func) == "float" and isinstance(c.args[0], ast.Constant) for c in calls)
            assert all(isinstance(n, (ast.Constant, ast.Tuple, ast.UnaryOp, ast.USub, ast.Call, ast.Name, ast.Load))
                       for n in ast.walk(stmt.value)), ast.unparse(stmt)
        else:
            assert isinstance(stmt, (ast.FunctionDef, ast.Pass)) or _is_docstring(stmt), ast.unparse(stmt)[:80]


def _check_scope(fn, module_names: set[str]) -> None:
    """Every name read in a function is its own local (argument, assignment, loop variable), a name the module
    defines, or a harmless builtin."""
    local = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            local.add(node.id)
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            assert node.id in local | module_names | SAFE_BUILTINS, f"{fn.name} reads {node.id!r}"


# ---- the side-effect sentinel -----------------------------------------------------------------------------------

EVENTS: list[tuple[str, tuple]] = []
_RECORDING = [False]


# introspection torch itself does once torch.compile has run in the process (dynamo's frame checks)
_INTROSPECTION = {"builtins.id", "sys._getframe", "sys._getframemodulename", "object.__getattr__"}


def _audit(event: str, args: tuple) -> None:
    if _RECORDING[0] and event not in _INTROSPECTION:
        EVENTS.append((event, args))


sys.addaudithook(_audit)  # cannot be removed; records only while _RECORDING is set


def _benign(event: str, args: tuple) -> bool:
    """Loading a module compiles and executes its own code; dataclass() compiles `__create_fn__` helpers."""
    if event == "compile":
        src, filename = args[0], str(args[1])
        text = src.decode() if isinstance(src, bytes) else str(src)
        return filename.startswith("<specc:") or text.lstrip().startswith("def __create_fn__")
    if event == "exec":
        code = args[0]
        return code.co_filename.startswith("<specc:") or code.co_name in ("<module>", "__create_fn__") and \
            code.co_filename == "<string>"
    return False


def build_watched(spec, run: bool, opt_level: int = 0):
    """Emit, import, build and run the model while recording audit events and new modules."""
    from specc.backends.torch import load_source

    source = spec.torch_source(opt_level=opt_level)
    before = set(sys.modules)
    EVENTS.clear()
    _RECORDING[0] = True
    try:
        mod = load_source(source, "hostile")
        model = None
        if run:
            model = getattr(mod, _main_class(source))()
            with torch.no_grad():
                model(*random_inputs(spec, dim_env(spec)))
    finally:
        _RECORDING[0] = False
    bad = [(e, str(a)[:120]) for e, a in EVENTS if not _benign(e, a)]
    assert not bad, f"side effects while importing/running the emitted module: {bad}"
    new = {m for m in set(sys.modules) - before if not m.startswith("torch.")}
    assert new == {mod.__name__}, new
    return source, model


def _main_class(source: str) -> str:
    """The model class: the one built from the config dataclass (helpers follow it in the file)."""
    return re.findall(r"^class (\w+)\(nn\.Module\):\n.*\n\n    def __init__\(self, config: ", source, re.M)[-1]


@pytest.fixture(scope="module", autouse=True)
def warm_torch():
    """Load torch's lazily imported pieces before the sentinel watches anything."""
    build_watched(specc.load(REPO / "specs" / "lenet5.nn"), run=True)


# ---- the corpus -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opt_level", [0, 1], ids=["O0", "O1"])
@pytest.mark.parametrize("path", EMIT, ids=[p.stem for p in EMIT])
def test_hostile_spec_emits_only_what_it_describes(path, opt_level):
    _, _, run = expectation(path)
    spec = specc.load(path)
    source, model = build_watched(spec, run, opt_level)
    check_ast(source)
    if model is not None:
        assert n_params(model) == spec.summary().params  # no layer lost to a name collision


@pytest.mark.parametrize("path", REJECT, ids=[p.stem for p in REJECT])
def test_hostile_spec_is_rejected_with_a_located_error(path):
    _, code, _ = expectation(path)
    with pytest.raises(CheckError) as err:
        specc.load(path)
    diags = err.value.diagnostics
    assert code in {d.code for d in diags}
    for d in diags:
        assert d.span is not None and Path(d.span.file).name == path.name and d.span.line >= 1, d
    text = err.value.render()
    assert f"{path.name}:" in text and "Traceback" not in text


def test_emitted_hostile_files_pass_ruff(tmp_path):
    files = []
    for path in EMIT:
        for level in (0, 1):
            f = tmp_path / f"{path.stem}_O{level}.py"
            f.write_text(specc.load(path).torch_source(opt_level=level))
            files.append(f)
    res = ruff_check(files)
    if res is None:
        pytest.skip("ruff not installed")
    assert res.returncode == 0, res.stdout


def test_strings_stay_inside_literals():
    """Spec strings become string constants only (repr-escaped). (Train-section strings are judged by the checker:
    train_strings.nn is refused with a located E0403.)"""
    source = specc.load(CORPUS / "strings.nn").torch_source()
    consts = {n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant)}
    assert '"""; import os; os.system("echo pwned") #' in consts
    assert 'line1\nline2\n"""\n#' in consts and "\\" in consts


def test_huge_repeat_stays_folded():
    source = specc.load(CORPUS / "huge_repeat.nn").torch_source()
    assert "range(config.n)" in source and "n: int = 1000000000000" in source and len(source.splitlines()) < 80


def test_model_named_like_a_module_is_not_written_under_that_name(tmp_path):
    from specc.api import compile_to
    from specc.targets import load_target

    written = compile_to(specc.load(CORPUS / "model_named_torch.nn"), load_target("torch-cpu"), tmp_path,
                         opt_level=0)
    assert [p.name for p in written] == ["torch_model.py"]


# ---- generated cases: file names and values that do not fit in a corpus file ----------------------------------

def test_hostile_file_names_cannot_escape_comments_or_docstrings(tmp_path):
    for i, name in enumerate(['ev"""il\nimport os\n#.nn', "a\\\nb'''.nn", "x\r\nos.system('id').nn"]):
        d = tmp_path / str(i)
        d.mkdir()
        path = d / name
        path.write_text("model M() {\n  input x: f32[B, 4]\n  output y = x -> linear(4)\n}\n")
        source = specc.load(path).torch_source()
        check_ast(source)
        tree = ast.parse(source)
        assert _is_docstring(tree.body[0]) and "\n" not in tree.body[0].value.value
        assert source.splitlines()[0].startswith("# generated by specc")  # the comment stayed one line


def test_integer_literal_too_long_is_a_located_error(tmp_path):
    path = tmp_path / "big.nn"
    path.write_text(f"model M(n: int = {'9' * 5000}) {{\n  input x: f32[B, 4]\n  output y = x -> linear(4)\n}}\n")
    with pytest.raises(CheckError) as err:
        specc.load(path)
    assert err.value.diagnostics[0].code == "E0001" and err.value.diagnostics[0].span.line == 1


def test_integer_too_large_to_print_is_a_located_error(tmp_path):
    a = "9" * 3000
    path = tmp_path / "bigmul.nn"
    path.write_text(f"model M(n: int = {a} * {a}) {{\n  input x: f32[B, 4]\n  output y = x -> linear(4)\n}}\n")
    with pytest.raises(SpecError) as err:
        specc.load(path).torch_source()
    d = err.value.diagnostics[0]
    # refused while checking (the integer-size budget), no longer only when emitting (issue 17)
    assert d.code == "E0112" and "--max-int-digits" in (d.help or "")
    assert d.span is not None and Path(d.span.file).name == "bigmul.nn"


@pytest.mark.parametrize("value", [b"x", {"a": 1}, {1, 2}, 1j])
def test_override_values_that_are_not_plain_data_are_rejected(value):
    with pytest.raises(SpecError) as err:
        specc.load(CORPUS / "strings.nn", a=value).torch_source()
    assert err.value.diagnostics[0].code == "E0107"


@pytest.mark.parametrize("value", ['"; import os; "', '"""\nimport os\n"""', "\\", "x\x00y"])
def test_override_strings_stay_string_constants(value):
    source = specc.load(CORPUS / "strings.nn", a=value).torch_source()
    check_ast(source)
    consts = {n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant)}
    assert value in consts


def test_module_attribute_list_covers_installed_torch():
    """The naming layer's list of nn.Module attributes (it does not import torch) covers the installed version's."""
    from specc.naming import _MODULE_ATTRS

    public = {a for a in dir(torch.nn.Module) if not a.startswith("_")} | set(vars(torch.nn.Module()))
    public = {a for a in public if not a.startswith("_")}
    assert public <= _MODULE_ATTRS, sorted(public - _MODULE_ATTRS)


# ---- the checks themselves catch what they are for --------------------------------------------------------------

_BENIGN = specc.load(REPO / "specs" / "lenet5.nn").torch_source()


@pytest.mark.parametrize("evil", [
    ("import torch\n", "import torch\nimport os\n"),
    ("import torch\n", "import torch\nprint(open('/etc/hostname').read())\n"),
    ("        x = self.c1(image)", "        x = eval('self.c1')(image)"),
    ("        x = self.c1(image)", "        x = self.c1(image).__class__.__bases__"),
    ("        x = self.c1(image)", "        x = __import__('os').getcwd() and self.c1(image)"),
    ("        super().__init__()\n", "        super().__init__()\n        global z\n"),
    ("    classes: int = 10", "    classes: int = exec('1') or 10"),
])
def test_ast_check_rejects_injected_code(evil):
    old, new = evil
    assert old in _BENIGN
    with pytest.raises(AssertionError):
        check_ast(_BENIGN.replace(old, new, 1))


def test_sentinel_sees_side_effects(tmp_path, monkeypatch):
    import specc.backends.torch as backend

    probe = tmp_path / "probe"
    evil = _BENIGN.replace("import torch\n", f"import torch\nopen({str(probe)!r}, 'w').close()\n", 1)
    monkeypatch.setattr(backend, "emit_source", lambda *a, **k: evil)
    monkeypatch.setattr(specc.api.Spec, "torch_source", lambda self, **k: evil)
    with pytest.raises(AssertionError, match="side effects"):
        build_watched(specc.load(REPO / "specs" / "lenet5.nn"), run=False)
    assert probe.exists()
