"""Register tiles on the stack: a kernel's `local` buffers of up to _MAX_BYTES become stack allocas, whatever
TVM's own limit.

TVM 0.27 (LowerTVMBuiltin) serves every CPU buffer of 1 KiB or more from TVMBackendAllocWorkspace, a heap pointer
LLVM knows nothing about. The AVX-512 GEMM's 6 x 64 accumulator tile is 1.5 KiB: in a loop that also issues a
software prefetch (few_rows: the next weight panel), LLVM cannot tell the prefetch from a write to that pointer and
stores all 24 accumulators after every round of the reduction. An alloca that never escapes is promoted to
registers (SROA) whatever the loop calls. `disable_lower_builtin` is LowerTVMBuiltin's own annotation for leaving
an allocation alone; this pass sets it on small `local` buffers of constant size, just before that pass runs.
SPECC_STACK_TILES=0 leaves TVM's rule (A/B)."""
from __future__ import annotations

import os

import tvm
from tvm import tirx

# the largest buffer put on the stack: 4 KiB (a 2-block 1x1 conv tile, 8 x 64 fp32, is 2 KiB); a worker thread's
# stack is megabytes, and every such buffer lives in one kernel's task at a time
_MAX_BYTES = 4096
_KEY = "disable_lower_builtin"


def enabled() -> bool:
    return os.environ.get("SPECC_STACK_TILES", "1") != "0"


def _small_local(buf) -> bool:
    if buf.scope() != "local":
        return False
    size = 1
    for d in buf.shape:
        if not isinstance(d, tirx.IntImm):
            return False
        size *= int(d)
    return 0 < size * (buf.dtype.bits * buf.dtype.lanes // 8) <= _MAX_BYTES


def _mark(stmt):
    """stmt with every small local AllocBuffer annotated; statements of other kinds are rebuilt around their
    bodies, unknown kinds left as they are."""
    if isinstance(stmt, tirx.AllocBuffer):
        ann = dict(stmt.annotations or {})
        if _small_local(stmt.buffer) and _KEY not in ann:
            ann[_KEY] = tirx.IntImm("bool", 1)
            return tirx.AllocBuffer(stmt.buffer, annotations=ann, span=stmt.span)
        return stmt
    if isinstance(stmt, tirx.SeqStmt):
        seq = [_mark(s) for s in stmt.seq]
        return stmt if all(a.same_as(b) for a, b in zip(seq, stmt.seq)) else tirx.SeqStmt(seq, stmt.span)
    if isinstance(stmt, tirx.For):
        body = _mark(stmt.body)
        return stmt if body.same_as(stmt.body) else tirx.For(
            stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding, stmt.annotations,
            step=getattr(stmt, "step", None), span=stmt.span)
    if isinstance(stmt, tirx.AttrStmt):
        body = _mark(stmt.body)
        return stmt if body.same_as(stmt.body) else tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body,
                                                                  stmt.span)
    if isinstance(stmt, tirx.IfThenElse):
        then, other = _mark(stmt.then_case), (_mark(stmt.else_case) if stmt.else_case is not None else None)
        if then.same_as(stmt.then_case) and (other is None or other.same_as(stmt.else_case)):
            return stmt
        return tirx.IfThenElse(stmt.condition, then, other, stmt.span)
    if isinstance(stmt, tirx.While):
        body = _mark(stmt.body)
        return stmt if body.same_as(stmt.body) else tirx.While(stmt.condition, body, stmt.span)
    return stmt


def register_tiles_on_stack():
    @tvm.tirx.transform.prim_func_pass(opt_level=0, name="specc.RegisterTilesOnStack")
    def mark(func, _mod, _ctx):
        body = _mark(func.body)
        return func if body.same_as(func.body) else func.with_body(body)

    return mark
