"""Run the spec fuzzer: `python -m tests.fuzz.run --cases 100000 [--jobs 2] [--seed 0] [--emit]`.

Each case runs in a worker process under a memory limit (RLIMIT_AS) and a time limit: --timeout seconds of CPU time
(ITIMER_PROF inside the worker: on a shared machine wall time measures the neighbours, not specc), and a kill from
the parent after --wall seconds of wall time when even that does not answer (e.g. one big-int multiplication that
never checks for signals). A worker that timed out, ran out of memory or died is replaced. Outcomes:

  accepted   the spec checked (with --emit: and its PyTorch module was emitted, parsed, and passed ruff)
  located    rejected with diagnostics that all carry a code and a location
  unlocated  rejected, but a diagnostic has no location
  internal   rejected with an internal-error diagnostic (specc's last-resort guard caught a bug of its own)
  uncaught   any other exception (a bug in specc), keyed by type and the innermost specc frame
  timeout    no answer within --timeout CPU seconds (or --wall seconds of wall time)
  memory     MemoryError or the worker died under the memory limit

`--minimize` shrinks the first case of each failing kind and writes it to tests/hostile/corpus/, which
tests/test_fuzz_corpus.py replays. Exit status 1 when any case failed (anything but accepted or located).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import resource
import signal
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

from . import gen

CORPUS = gen.REPO / "tests" / "hostile" / "corpus"
BAD = ("internal", "unlocated", "uncaught", "timeout", "memory")


class _Alarm(BaseException):
    """Raised in the worker by SIGPROF; a BaseException so that no `except Exception` in specc swallows it."""


def _on_alarm(signum, frame):
    raise _Alarm()


def classify(name: str, text: str, emit: bool = False) -> tuple[str, str]:
    """(outcome, detail) of checking one spec in this process."""
    from specc import diagnostics
    from specc.api import CheckError, loads

    INTERNAL = getattr(diagnostics, "INTERNAL", "E0900")  # noqa: N806 - also runs against older specc versions

    try:
        spec = loads(text, name=name)
    except CheckError as e:
        for d in e.diagnostics:
            if d.code == INTERNAL:
                return "internal", d.message.removeprefix("internal error while checking ")[:160]
            if d.span is None and d.code != "E0401":
                return "unlocated", f"{d.code} {d.message[:120]}"
        e.render()  # rendering must not fail either
        return "located", e.diagnostics[0].code
    if emit:
        _emit_checks(spec)
    return "accepted", ""


def _emit_checks(spec) -> None:
    """The emitted PyTorch module parses (ruff is run in batches by the property test, not per case here)."""
    import ast

    ast.parse(spec.torch_source())


def _where(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/specc/" in f.filename]
    f = frames[-1] if frames else traceback.extract_tb(exc.__traceback__)[-1]
    return f"{Path(f.filename).name}:{f.name}"


def _run_one(name: str, text: str, timeout: float, emit: bool) -> tuple[str, str, float]:
    t0 = time.process_time()
    outcome, detail = _run_limited(name, text, timeout, emit)
    return outcome, detail, time.process_time() - t0


def _run_limited(name: str, text: str, timeout: float, emit: bool) -> tuple[str, str]:
    signal.setitimer(signal.ITIMER_PROF, timeout)
    try:
        return classify(name, text, emit)
    except _Alarm:
        return "timeout", ""
    except MemoryError:
        return "memory", ""
    except RecursionError as e:
        return "uncaught", f"RecursionError@{_where(e)}"
    except Exception as e:  # noqa: BLE001 - the point is to catch everything
        return "uncaught", f"{type(e).__name__}@{_where(e)}: {str(e)[:100]}"
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)


def _worker(conn, memory: int, timeout: float, emit: bool) -> None:
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    signal.signal(signal.SIGPROF, _on_alarm)
    os.environ["OMP_NUM_THREADS"] = "1"
    classify("warmup.nn", "model M() {\n  input x: f32[B, 4]\n  output y = x -> relu\n}\n")  # imports, grammar
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        name, text = job
        try:
            conn.send(_run_one(name, text, timeout, emit))
        except _Alarm:
            conn.send(("timeout", "", timeout))


class Pool:
    """Workers that each run one case at a time; a worker that does not answer in time is killed and replaced."""

    def __init__(self, jobs: int, memory: int, timeout: float, emit: bool = False, wall: float | None = None) -> None:
        self.ctx = mp.get_context("fork")
        self.args = (memory, timeout, emit)
        self.wall = wall if wall is not None else max(60.0, 10 * timeout)
        self.workers = [self._spawn() for _ in range(jobs)]

    def _spawn(self):
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker, args=(child, *self.args), daemon=True)
        p.start()
        child.close()
        return [p, parent, None, 0.0]  # process, pipe, job in flight, start time

    def run(self, jobs, on_result) -> None:
        """jobs: iterable of (key, name, text); on_result(key, name, text, outcome, detail, CPU seconds)."""
        it = iter(jobs)
        done = False
        while True:
            for w in self.workers:
                if w[2] is None and not done:
                    job = next(it, None)
                    if job is None:
                        done = True
                    else:
                        w[2], w[3] = job, time.monotonic()
                        try:
                            w[1].send(job[1:])
                        except OSError:  # the worker died before taking it (e.g. at start-up)
                            pass  # its pipe reads EOF below: counted as "worker died"
            busy = [w for w in self.workers if w[2] is not None]
            if not busy:
                return
            ready = mp.connection.wait([w[1] for w in busy], timeout=0.2)
            now = time.monotonic()
            for i, w in enumerate(self.workers):
                if w[2] is None:
                    continue
                if w[1] in ready:
                    job = w[2]
                    try:
                        outcome, detail, cpu = w[1].recv()
                    except (EOFError, OSError):
                        outcome, detail, cpu = "memory", "worker died", now - w[3]
                    w[2] = None
                    if outcome in ("timeout", "memory"):
                        self._replace(i)
                    on_result(*job, outcome, detail, cpu)
                elif now - w[3] > self.wall:
                    job = w[2]
                    self._replace(i)
                    on_result(*job, "timeout", "killed", now - w[3])

    def _replace(self, i: int) -> None:
        p = self.workers[i][0]
        if p.is_alive():
            p.kill()
        p.join()
        self.workers[i] = self._spawn()

    def close(self) -> None:
        for p, conn, _, _ in self.workers:
            try:
                conn.send(None)
            except OSError:
                pass
            p.join(timeout=2)
            if p.is_alive():
                p.kill()


def kind_of(outcome: str, detail: str) -> str:
    """The failure class a finding is counted and minimized under."""
    if outcome == "uncaught":
        return "uncaught:" + detail.split(":")[0]
    if outcome == "internal":
        return "internal:" + detail.split(":")[1].strip() if ":" in detail else "internal"
    if outcome == "unlocated":
        return "unlocated:" + detail.split(" ")[0]
    return outcome


def fuzz(cases: int, seed: int = 0, start: int = 0, jobs: int = 2, memory: int = 2 << 30, timeout: float = 5.0,
         budget: float | None = None, emit: bool = False, progress: bool = False, wall: float | None = None,
         snapshot: Path | None = None) -> dict:
    """Run cases [start, start+cases) of `seed`; stop early after `budget` seconds. Returns the tallies and, per
    failing kind, its first case number and text."""
    counts: Counter = Counter()
    kinds: Counter = Counter()
    first: dict[str, dict] = {}
    slowest = [0.0, -1]
    t0 = time.monotonic()

    def jobs_iter():
        for i in range(start, start + cases):
            if budget is not None and time.monotonic() - t0 > budget:
                return
            name, text = gen.case(seed, i)
            yield i, name, text

    def on_result(i, name, text, outcome, detail, secs):
        counts[outcome] += 1
        if secs > slowest[0] and outcome != "timeout":
            slowest[:] = [secs, i]
        if outcome in BAD:
            k = kind_of(outcome, detail)
            kinds[k] += 1
            first.setdefault(k, {"case": i, "name": name, "detail": detail, "text": text, "more": []})
            if len(first[k]["more"]) < 50:
                first[k]["more"].append(i)
        n = sum(counts.values())
        if progress and n % 1000 == 0:
            print(f"{n} cases, {time.monotonic() - t0:.0f}s: {dict(counts)}", file=sys.stderr, flush=True)
        if snapshot is not None and n % 100 == 0:  # a long run killed early still leaves its figures
            tmp = snapshot.with_suffix(".tmp")
            tmp.write_text(json.dumps({"cases": n, "seconds": round(time.monotonic() - t0, 1),
                                       "outcomes": dict(counts), "kinds": dict(kinds),
                                       "first": {k: {"case": v["case"], "detail": v["detail"]}
                                                 for k, v in first.items()}}, indent=1))
            os.replace(tmp, snapshot)

    pool = Pool(jobs, memory, timeout, emit, wall)
    try:
        pool.run(jobs_iter(), on_result)
    finally:
        pool.close()
    return {"seed": seed, "start": start, "cases": sum(counts.values()), "seconds": round(time.monotonic() - t0, 1),
            "outcomes": dict(counts), "kinds": dict(kinds), "slowest": {"seconds": round(slowest[0], 2),
                                                                        "case": slowest[1]}, "first": first}


def minimize(name: str, text: str, kind: str, timeout: float, memory: int, max_tries: int = 300) -> str:
    """Delta-debug `text` by lines, then by tokens, keeping the failure kind."""
    pool = Pool(1, memory, timeout)
    tries = [0]

    def same(candidate: str) -> bool:
        if tries[0] >= max_tries:
            return False
        tries[0] += 1
        got = []
        pool.run([(0, name, candidate)], lambda *r: got.append(kind_of(r[3], r[4])))
        return got == [kind]

    def shrink(parts: list[str], join: str) -> list[str]:
        n = 2
        while len(parts) >= 2 and tries[0] < max_tries:
            chunk = max(1, len(parts) // n)
            for s in range(0, len(parts), chunk):
                cand = parts[:s] + parts[s + chunk:]
                if cand and same(join.join(cand)):
                    parts = cand
                    n = max(n - 1, 2)
                    break
            else:
                if chunk == 1:
                    break
                n = min(len(parts), n * 2)
        return parts

    try:
        lines = shrink(text.split("\n"), "\n")
        text = "\n".join(lines)
        toks = [m.group() for m in gen.TOKEN.finditer(text) if not m.group().startswith("#")]  # comments end lines
        small = " ".join(shrink(toks, " ")) + "\n"
        return small if same(small) or tries[0] >= max_tries else text
    finally:
        pool.close()


def save_crasher(kind: str, text: str) -> Path:
    CORPUS.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "_" for c in kind.split("@")[0].replace(":", "_"))[:40]
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    path = CORPUS / f"{slug}_{digest}.nn"
    header = f"# found by tests/fuzz ({kind}); must end in a located error or be accepted\n"
    path.write_text(header + text, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case number")
    ap.add_argument("--only", type=int, help="run and print one case")
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument("--timeout", type=float, default=5.0, help="CPU seconds per case")
    ap.add_argument("--wall", type=float, help="wall-clock seconds per case before the worker is killed "
                    "(default: 10 x --timeout, at least 60)")
    ap.add_argument("--memory", type=int, default=2048, help="MiB per worker")
    ap.add_argument("--budget", type=float, help="stop after this many seconds")
    ap.add_argument("--emit", action="store_true", help="also emit PyTorch for accepted specs")
    ap.add_argument("--minimize", action="store_true", help="shrink each failing kind into tests/hostile/corpus/")
    ap.add_argument("--minimize-all", action="store_true", help="shrink timeouts and memory exhaustion too")
    ap.add_argument("--json", help="write the tallies here (every 100 cases, and at the end)")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    memory = a.memory << 20
    if a.only is not None:
        name, text = gen.case(a.seed, a.only)
        print(text)
        res = fuzz(1, a.seed, a.only, 1, memory, a.timeout, emit=a.emit)
        print(json.dumps({k: v for k, v in res.items() if k != "first"}, indent=1))
        return 1 if any(o in BAD for o in res["outcomes"]) else 0
    res = fuzz(a.cases, a.seed, a.start, a.jobs, memory, a.timeout, a.budget, a.emit, progress=not a.quiet,
               wall=a.wall, snapshot=Path(a.json) if a.json else None)
    summary = {k: v for k, v in res.items() if k != "first"}
    summary["first"] = {k: {"case": v["case"], "detail": v["detail"], "cases": v["more"][:20]}
                        for k, v in res["first"].items()}
    print(json.dumps(summary, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    if a.minimize:
        for kind, f in res["first"].items():
            if kind in ("timeout", "memory") and not a.minimize_all:
                continue  # slow to shrink, and often a sign of a loaded machine: look at these by hand
            small = minimize(f["name"], f["text"], kind, a.timeout, memory)
            print(f"{kind}: case {f['case']} -> {save_crasher(kind, small)}", file=sys.stderr)
    return 1 if any(o in BAD for o in res["outcomes"]) else 0


if __name__ == "__main__":
    sys.exit(main())
