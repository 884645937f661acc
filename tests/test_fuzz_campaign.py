"""The fuzz campaign in CI: generated and mutated specs (tests/fuzz) end in a located error or a checked module,
within 5 s and 2 GiB each; every minimized crasher it ever found (tests/hostile/corpus/) stays fixed.

The full campaign: `python -m tests.fuzz.run --cases 100000 --jobs 2` (see tests/fuzz/run.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from fuzz import gen
from fuzz.run import BAD, CORPUS, Pool, fuzz, kind_of

# Fixed case counts, not time budgets: the same cases run on every machine, so a red CI names a change, not a
# faster CPU reaching cases a slower one never did. SPECC_FUZZ_CASES / SPECC_EMIT_CASES widen the run.
CASES = int(os.environ.get("SPECC_FUZZ_CASES", "4000"))
EMIT_CASES = int(os.environ.get("SPECC_EMIT_CASES", "2500"))
CORPUS_FILES = sorted(CORPUS.glob("*.nn"))


def test_generated_specs_end_in_located_errors_or_checked_modules():
    res = fuzz(cases=CASES, seed=0, jobs=2, timeout=5.0)
    assert res["cases"] == CASES, res
    bad = {k: v for k, v in res["outcomes"].items() if k in BAD}
    details = {k: (f["case"], f["detail"]) for k, f in res["first"].items()}
    assert not bad, f"{bad}; first case of each kind (python -m tests.fuzz.run --only N): {details}"
    # the generators must reach both ends, or the campaign tests nothing
    assert res["outcomes"].get("accepted", 0) > res["cases"] // 20
    assert res["outcomes"].get("located", 0) > res["cases"] // 5


def test_cases_are_reproducible_by_number():
    assert gen.case(0, 1234) == gen.case(0, 1234)
    assert gen.case(0, 1234) != gen.case(1, 1234)


@pytest.mark.skipif(not CORPUS_FILES, reason="empty corpus")
def test_corpus_of_minimized_crashers_stays_fixed():
    results = {}
    pool = Pool(2, 2 << 30, 5.0)
    try:
        pool.run(((p.name, p.name, p.read_text()) for p in CORPUS_FILES),
                 lambda key, name, text, outcome, detail, secs: results.__setitem__(key, (outcome, detail, secs)))
    finally:
        pool.close()
    failing = {k: v for k, v in results.items() if v[0] in BAD}
    assert not failing, failing
    assert len(results) == len(CORPUS_FILES)


def test_the_harness_reports_crashes_hangs_and_memory(monkeypatch, tmp_path: Path):
    """The pool classifies what a buggy specc would do: raise, loop forever, allocate without end."""
    import fuzz.run as run

    def buggy(name, text, emit=False):
        if text == "raise":
            raise KeyError("boom")
        if text == "hang":
            while True:
                pass
        if text == "memory":
            return "accepted", str(len(bytearray(4 << 30)))
        return "located", "E0001"

    monkeypatch.setattr(run, "classify", buggy)
    got = {}
    pool = Pool(2, 1 << 30, 1.0)
    try:
        pool.run([(t, "x.nn", t) for t in ("raise", "hang", "memory", "ok")],
                 lambda key, name, text, outcome, detail, secs: got.__setitem__(key, kind_of(outcome, detail)))
    finally:
        pool.close()
    assert got == {"raise": "uncaught:KeyError@test_fuzz_campaign.py", "hang": "timeout", "memory": "memory",
                   "ok": "located"}


@pytest.mark.parametrize("opt_level", [0, 1])
def test_accepted_specs_emit_ruff_clean_python_whose_forward_runs(opt_level):
    """The property of issue 17: every generated spec `specc check` accepts emits PyTorch that parses, passes
    ruff, builds, and runs forward on inputs of the declared shapes and dtypes with the predicted outputs."""
    pytest.importorskip("torch")
    from fuzz.emit import FAILURES, run

    res = run(cases=EMIT_CASES, seed=opt_level, opt_level=opt_level)
    bad = {k: v for k, v in res["outcomes"].items() if k in FAILURES}
    assert not bad, f"{bad}: {res['first']} (python -m tests.fuzz.emit --seed {opt_level} -O {opt_level} --only N)"
    assert res["outcomes"].get("ok", 0) >= 10, res
