"""Batches of QPs solved in parallel on persistent ("sticky") worker processes.

:func:`solve_batch` solves a list of QPs (same or different sparsity patterns) and returns the
results in order. With a worker pool, every worker keeps the solver state of the problems it
solved (factorization, scaling, active set, solution) in a bounded LRU cache under a *handle*;
the parent gets :class:`RemoteResult` proxies that carry the solution fields and send
``vjp`` / ``jvp`` / ``jacobian`` requests to the worker that owns the state, so derivatives
reuse the forward factorization as they do in-process. :func:`vjp_batch` / :func:`jvp_batch`
send a batch of derivative requests to each worker in a few messages (a quarter of its share
each, ``depth`` in flight), so that replies stream back while the worker computes.

Lifetime of a state
-------------------
* Released when its proxy is garbage collected (``weakref.finalize``) or closed
  (:meth:`RemoteResult.close`). Releases are queued and delivered with the next message to the
  worker (any pool call; :meth:`WorkerPool.cache_sizes` delivers them at once).
* Evicted (least recently used first) when a worker holds more than ``cache_size`` states, or
  lost when its worker died. A derivative request for such a state re-solves the problem on the
  same worker slot first (the parent keeps a reference to every problem it dispatched: for
  :class:`~sparseqp.problem.Problem` inputs that is the caller's object, no copy) and restores
  the caller's solution (x, y, z, shifts, status) into the new state, so the derivative is that
  of the solution the caller holds. ``WorkerPool.stats()`` counts these re-solves
  (``resolves_evicted``, ``resolves_lost``).

Data sent to workers
--------------------
Index arrays (``indptr``/``indices`` of H, A, C) are identified by a content hash (SHA-256 of
the bytes, computed at most once per array object per call) and sent to a worker once; later
problems with the same pattern carry the 16-byte key only. Value arrays are keyed the same way
when the same object is in several problems of a call (e.g. the A of MPC problems that differ
only in b), or when distinct arrays of the call have equal contents (a fingerprint of five
entries finds the candidates, the hash decides). Each worker keeps these arrays in a blob store
mirrored by the parent (``blob_budget`` bytes per worker, LRU); problems in a worker share
them. Everything else goes inline.

Local workers exchange framed messages over their socket pair (:class:`_Channel`): a pickle
(protocol 5) stream plus the raw bytes of each array of 2 KiB or more as out-of-band buffers,
sent from the arrays' memory and received into the arrays' final memory (one copy, the
kernel's). Shared memory is not used: for the problems measured (``benchmarks/bench_batch.py``)
the whole transport costs well under 1% of the solve time.

Protocol (requests and replies in order; at most ``depth`` requests in flight per worker)
-----------------------------------------------------------------------------------
``request = {"ops": [op, ...], "blobs": {key: ndarray}, "release": [handle, ...],
"drop": [key, ...]}``; the worker releases handles, stores blobs, runs the ops in order, then
drops blobs. ``reply = {"results": [r, ...], "busy": seconds, "compute": CPU seconds in
solves and derivatives}`` with one ``r`` per op:
``("ok", value)``, ``("miss",)`` (state not cached) or ``("error", exception, traceback)``.
Ops: ``("solve", handle, problem_spec, settings)`` -> public fields of the Result;
``("vjp" | "jvp" | "jacobian", handle, kwargs)`` -> the derivative; ``("info",)`` -> cache
statistics; ``("call", fn, args)`` -> ``fn(*args)``. :class:`WorkerState` implements the worker
side; :class:`WorkerPool` (local processes) and :class:`sparseqp.ray_backend.RayPool` (Ray
actors) the parent side over two transports.

Faults
------
Every wait watches the worker's liveness (process sentinel, or the Ray object ref) and an
optional deadline (``timeout``). A worker that dies while it works on batch elements raises
:class:`WorkerError` naming those elements; the pool replaces the worker (lazily, at the next
call) and later calls work. A timeout raises :class:`WorkerTimeout` and terminates the workers
that were busy. On ``KeyboardInterrupt`` the busy workers are killed (not orphaned) and the
interrupt propagates; idle workers and their caches survive. Workers ignore SIGINT (the parent
decides) and exit when the parent's end of their pipe closes.

Executors
---------
``solve_batch(..., executor=...)`` accepts

* ``None``: in-process when ``n_jobs`` is None or 1 (plain :class:`~sparseqp.result.Result`
  objects), else the default local pool (shared by all calls of the process, grown to the
  largest ``n_jobs`` asked; a call uses ``n_jobs`` of its workers);
* ``"process"``: the default local pool; ``"ray"``: the default Ray pool
  (:mod:`sparseqp.ray_backend`, needs ``pip install sparseqp[ray]``);
* a :class:`WorkerPool` or :class:`~sparseqp.ray_backend.RayPool` instance;
* any object with ``submit(fn, *args) -> future`` whose futures have ``result(timeout=None)``
  (:class:`concurrent.futures.Executor`, ``dask.distributed.Client``, ...). Such executors have
  no sticky state: the results are :class:`DetachedResult` objects whose derivatives are
  computed by a task that re-solves the problem where it runs (each derivative call costs a
  solve).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import math
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import queue
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import weakref
from collections import OrderedDict, deque
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from .interface import Solver
from .problem import Problem, make_problem
from .result import Result
from .settings import make_settings

__all__ = ["solve_batch", "vjp_batch", "jvp_batch", "WorkerPool", "RemoteResult",
           "DetachedResult", "WorkerError", "WorkerTimeout", "WorkerState", "get_pool"]

_DERIVATIVE_OPS = ("vjp", "jvp", "jacobian")
_VJP_ARGS = ("dx", "dy", "dz", "ds_eq", "ds_in")
_JVP_ARGS = ("dH", "dg", "dA", "db", "dC", "dl", "du")
_BLOB_MIN_BYTES = 4096          # smaller arrays always travel inline
_PROBLEM_KEYS = ("H", "g", "A", "b", "C", "l", "u")
# fields a re-solved state takes from the original result, so that derivatives after an
# eviction are those of the solution the caller holds even where the solve is not bitwise
# reproducible (the solver's PCG-or-refactorize choice depends on measured timings)
_RESTORED = ("x", "y", "z", "s_eq", "s_in", "status", "success")


# =============================================================================================
# errors
# =============================================================================================
class WorkerError(RuntimeError):
    """A worker died (killed, crashed, out of memory) or failed to start.

    Attributes
    ----------
    elements : list of int
        Batch elements the worker was working on (indices into the list given to the call).
    pid : int or None
        Process id of the worker (Ray: of the actor's process).
    reason : str
        How it ended (``"killed by signal SIGKILL"``, ``"exited with code 1"``, ...).
    """

    def __init__(self, message, *, elements=(), pid=None, reason=""):
        super().__init__(message)
        self.elements = list(elements)
        self.pid = pid
        self.reason = reason


class WorkerTimeout(WorkerError, TimeoutError):
    """No reply within the call's ``timeout``; the busy workers were terminated and replaced."""


class _WorkerDied(Exception):
    """Raised by a transport when the worker is gone; carries the reason."""


def _add_note(exc, note):
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    return exc


def _elements_text(indices):
    indices = sorted(indices)
    if len(indices) == 1:
        return f"batch element {indices[0]}"
    shown = ", ".join(map(str, indices[:10])) + (", ..." if len(indices) > 10 else "")
    return f"batch elements [{shown}]"


def _remote_error(reply, index, doing):
    """Re-raise an exception that a worker reported for one op, naming the batch element."""
    _, exc, text = reply
    _add_note(exc, f"raised in a sparseqp worker while {doing} {_elements_text([index])}")
    if text:
        _add_note(exc, "worker traceback:\n" + text.rstrip())
    return exc


# =============================================================================================
# worker side
# =============================================================================================
class _OnPattern:
    """A sparse matrix on the pattern of the problem's matrix ``name``: values only."""

    __slots__ = ("name", "data")

    def __init__(self, name, data):
        self.name = name
        self.data = data

    def __reduce__(self):
        return (_OnPattern, (self.name, self.data))


class _Compacted:
    """A dataclass value (Gradients) whose matrices on the problem's patterns are values only."""

    __slots__ = ("cls", "fields")

    def __init__(self, cls, fields):
        self.cls = cls
        self.fields = fields

    def __reduce__(self):
        return (_Compacted, (self.cls, self.fields))


def _same_pattern(M, P):
    return (sp.issparse(M) and M.format == "csc" and M.shape == P.shape and M.nnz == P.nnz
            and (M.indptr is P.indptr or np.array_equal(M.indptr, P.indptr))
            and (M.indices is P.indices or np.array_equal(M.indices, P.indices)))


def _compact(value, problem):
    """Strip the index arrays of matrices that lie on the problem's own patterns."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    changed = False
    for name in ("H", "A", "C"):
        M = fields.get(name)
        if M is not None and _same_pattern(M, getattr(problem, name)):
            fields[name] = _OnPattern(name, M.data)
            changed = True
    return _Compacted(type(value), fields) if changed else value


def _expand(value, problem):
    """Inverse of :func:`_compact` (parent side; the index arrays are the problem's own)."""
    if not isinstance(value, _Compacted):
        return value
    fields = {}
    for name, v in value.fields.items():
        if isinstance(v, _OnPattern):
            # a shallow copy of the problem's matrix with the values replaced: the pattern was
            # checked in the worker, so the constructor's checks (a scan of the indices) and
            # its copies are not needed
            v, data = copy.copy(getattr(problem, v.name)), v.data
            v.data = data
        fields[name] = v
    return value.cls(**fields)


def _public_fields(result):
    return {k: v for k, v in result.items() if not k.startswith("_")}


def _portable(exc):
    """The exception itself if it pickles, else a RuntimeError carrying its text."""
    try:
        pickle.loads(pickle.dumps(exc, protocol=5))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class WorkerState:
    """What one worker keeps: shared arrays (blobs) and the solved states (LRU by handle).

    Used by the local worker processes and by the Ray actors alike; see the module docstring
    for the messages. ``cache_size`` is the most states kept (0: none).
    """

    def __init__(self, cache_size):
        self.cache_size = int(cache_size)
        self.blobs = {}
        self.states = OrderedDict()          # handle -> (Result holding its Solver, Problem)
        self.counts = {"solved": 0, "evicted": 0, "hits": 0, "misses": 0}
        self.compute = 0.0       # CPU seconds in Solver(...).solve() and derivatives (this thread)

    @staticmethod
    def hello():
        """The first message of a worker: its process id."""
        return ("hello", os.getpid())

    def handle(self, msg):
        """Run one request (a dict, see the module docstring); return the reply dict."""
        t0, c0 = time.perf_counter(), self.compute
        for handle in msg.get("release", ()):
            self.states.pop(handle, None)
        self.blobs.update(msg.get("blobs", {}))
        results = [self._run(op) for op in msg["ops"]]
        for key in msg.get("drop", ()):
            self.blobs.pop(key, None)
        return {"results": results, "busy": time.perf_counter() - t0,
                "compute": self.compute - c0}

    # -----------------------------------------------------------------------------------------
    def _run(self, op):
        kind = op[0]
        try:
            if kind == "solve":
                return ("ok", self._solve(*op[1:]))
            if kind in _DERIVATIVE_OPS:
                _, handle, kwargs = op
                entry = self.states.get(handle)
                if entry is None:
                    self.counts["misses"] += 1
                    return ("miss",)
                self.counts["hits"] += 1
                self.states.move_to_end(handle)
                result, problem = entry
                t0 = time.thread_time()
                value = getattr(result, kind)(**kwargs)
                self.compute += time.thread_time() - t0
                return ("ok", _compact(value, problem))
            if kind == "info":
                return ("ok", self.info())
            if kind == "call":
                _, fn, args = op
                return ("ok", fn(*args))
            raise ValueError(f"unknown worker op {kind!r}")
        except Exception as exc:
            return ("error", _portable(exc), traceback.format_exc())

    def _solve(self, handle, spec, settings, restore=None):
        problem = self._decode_problem(spec)
        t0 = time.thread_time()
        result = Solver(problem, **settings).solve()
        self.compute += time.thread_time() - t0
        if restore:                      # a re-solve: keep the caller's solution
            result.update(restore)
        self.counts["solved"] += 1
        self.states[handle] = (result, problem)
        self.states.move_to_end(handle)
        while len(self.states) > self.cache_size:
            self.states.popitem(last=False)
            self.counts["evicted"] += 1
        return _public_fields(result)

    def _array(self, ref):
        return self.blobs[ref] if isinstance(ref, bytes) else ref

    def _decode_problem(self, spec):
        arr = self._array

        def matrix(m):
            cls, shape, data, indices, indptr = m
            return cls((arr(data), arr(indices), arr(indptr)), shape=shape)

        return Problem(H=matrix(spec["H"]), g=arr(spec["g"]), A=matrix(spec["A"]),
                       b=arr(spec["b"]), C=matrix(spec["C"]), l=arr(spec["l"]),
                       u=arr(spec["u"]), constant=spec["constant"], name=spec["name"])

    def info(self):
        """Cache statistics of this worker."""
        return dict(self.counts, pid=os.getpid(), cached=len(self.states),
                    handles=list(self.states), blobs=len(self.blobs),
                    blob_bytes=int(sum(a.nbytes for a in self.blobs.values())))


def _dumps_reply(reply, buffer_callback=None):
    """Pickle a reply; a value that does not pickle becomes an error of its op."""
    try:
        return pickle.dumps(reply, protocol=5, buffer_callback=buffer_callback)
    except Exception:
        results = reply["results"]
        for i, r in enumerate(results):
            try:
                pickle.dumps(r, protocol=5)
            except Exception as exc:
                results[i] = ("error", RuntimeError(f"reply not picklable: {exc}"), "")
        return pickle.dumps(reply, protocol=5, buffer_callback=buffer_callback)


# ---------------------------------------------------------------------------------------------
# framed messages between the parent and a local worker
# ---------------------------------------------------------------------------------------------
_OOB_MIN_BYTES = 2048           # array buffers this large travel out-of-band (no pickle copy)
_SNDBUF = 4 << 20               # asked for (the system caps it: net.core.wmem_max)
_IOV_MAX = 512                  # buffers per sendmsg / recvmsg_into call (Linux allows 1024)


def _consume(views, n):
    """Drop the first n bytes from a list of memoryviews (a partial sendmsg / recvmsg_into)."""
    while n:
        first = views[0]
        if n >= first.nbytes:
            n -= first.nbytes
            views.pop(0)
        else:
            views[0] = first[n:]
            n = 0


_SOCKETS = hasattr(socket.socket, "sendmsg") and hasattr(socket.socket, "recvmsg_into")


class _Channel:
    """One end of the parent <-> worker connection: framed pickle-5 messages.

    A frame is ``[u32 header length][header: u64 stream length, u32 n, n x u64 buffer
    lengths][stream][buffer 1]...[buffer n]``: the pickle stream, then the raw bytes of every
    array of at least ``_OOB_MIN_BYTES`` (pickle protocol 5 out-of-band buffers). The sender
    gathers them straight from the arrays' memory (``sendmsg``), the receiver scatters them
    into one fresh ``bytearray`` per array (``recvmsg_into``) that the unpickled array then
    uses: one copy in all (the kernel's), where pickling in-band and ``Connection.recv_bytes``
    copied each array four times. An empty stream is the shutdown message.

    Where sockets lack ``sendmsg`` (Windows pipes), frames are in-band pickles sent with
    ``Connection.send_bytes``.
    """

    def __init__(self, conn):
        self.conn = conn
        self.sock = None
        if _SOCKETS:
            try:
                self.sock = socket.socket(fileno=os.dup(conn.fileno()))
                self.sock.setblocking(True)
            except (OSError, ValueError):
                self.sock = None
            else:
                try:    # a reply of a few MB goes into the kernel at once: the sender goes on
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
                except OSError:
                    pass

    def close(self):
        if self.sock is not None:
            self.sock.close()

    # ----- sending -----------------------------------------------------------------------
    def send(self, obj, pickled=None):
        """Send ``obj`` (or the stream ``pickled`` with its out-of-band buffers); bytes sent."""
        if self.sock is None:
            payload = pickle.dumps(obj, protocol=5) if pickled is None else pickled[0]
            self.conn.send_bytes(payload)
            return len(payload)
        if pickled is None:
            buffers = []
            stream = pickle.dumps(obj, protocol=5, buffer_callback=_out_of_band(buffers))
        else:
            stream, buffers = pickled
        return self.send_frame(stream, buffers)

    def send_frame(self, stream, buffers):
        raws = [b.raw() if isinstance(b, pickle.PickleBuffer) else memoryview(b).cast("B")
                for b in buffers]
        head = struct.pack(f"<QI{len(raws)}Q", len(stream), len(raws), *(r.nbytes for r in raws))
        parts = [memoryview(struct.pack("<I", len(head)) + head), memoryview(stream), *raws]
        parts = [p for p in parts if p.nbytes]
        total = sum(p.nbytes for p in parts)
        while parts:
            _consume(parts, self.sock.sendmsg(parts[:_IOV_MAX]))
        return total

    def shutdown_message(self):
        if self.sock is None:
            self.conn.send_bytes(b"")
        else:
            self.send_frame(b"", [])

    # ----- receiving ---------------------------------------------------------------------
    def recv_frame(self):
        """The next frame as (stream, buffers, size); stream is empty for shutdown."""
        if self.sock is None:
            payload = self.conn.recv_bytes()
            return payload, [], len(payload)
        size = bytearray(4)
        self._fill([memoryview(size)])
        (n_head,) = struct.unpack("<I", size)
        head = bytearray(n_head)
        self._fill([memoryview(head)])
        n_stream, n_buffers = struct.unpack_from("<QI", head)
        lengths = struct.unpack_from(f"<{n_buffers}Q", head, 12)
        stream = bytearray(n_stream)
        # np.empty: not zero-filled first (bytearray(k) is); the arrays unpickled from these
        # buffers are writable and each owns its buffer alone
        buffers = [np.empty(k, np.uint8) for k in lengths]
        self._fill([memoryview(stream)] + [memoryview(b).cast("B") for b in buffers])
        return stream, buffers, 4 + n_head + n_stream + sum(lengths)

    def _fill(self, views):
        views = [v for v in views if v.nbytes]
        while views:
            n = self.sock.recvmsg_into(views[:_IOV_MAX])[0]
            if n == 0:
                raise EOFError("connection closed")
            _consume(views, n)

    @staticmethod
    def loads(frame):
        stream, buffers, _ = frame
        return pickle.loads(stream, buffers=buffers)


def _out_of_band(buffers):
    """A pickle ``buffer_callback``: large buffers out-of-band (appended), small ones in-band."""
    def callback(buf):
        if buf.raw().nbytes < _OOB_MIN_BYTES:
            return True
        buffers.append(buf)
        return False
    return callback


def _read_requests(chan, inbox):
    """Reader thread of a worker: drain the connection into ``inbox`` so the parent never
    blocks in a send (frames only: the main thread unpickles, so that a bad request fails
    the worker's request, not this thread)."""
    try:
        while True:
            frame = chan.recv_frame()
            if not frame[0]:                          # shutdown
                inbox.put(None)
                return
            inbox.put(frame)
    except (EOFError, OSError):                       # the parent is gone
        inbox.put(None)


def _worker_main(conn, cache_size):
    """Entry point of a local worker process: serve requests until shutdown or EOF.

    A reader thread keeps receiving while the main thread computes, so that a request queued
    behind the current one (``depth`` 2) never leaves both ends blocked in a send.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is the parent's to handle
    state = WorkerState(cache_size)
    chan = _Channel(conn)
    inbox = queue.SimpleQueue()
    try:
        chan.send(state.hello())
        threading.Thread(target=_read_requests, args=(chan, inbox), daemon=True).start()
        while True:
            frame = inbox.get()
            if frame is None:                         # shutdown or EOF
                break
            reply = state.handle(chan.loads(frame))
            del frame
            buffers = []
            stream = _dumps_reply(reply, _out_of_band(buffers) if chan.sock else None)
            chan.send(None, (stream, buffers))
            del reply, stream, buffers
    except (EOFError, OSError):                       # the parent is gone
        pass


# =============================================================================================
# parent side: encoding
# =============================================================================================
def _digest(a):
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).view(np.uint8).data)
    return h.digest()[:16]


def _problem_arrays(p):
    for M in (p.H, p.A, p.C):
        yield M.data
        yield M.indices
        yield M.indptr
    yield from (p.g, p.b, p.l, p.u)


def _fingerprint(a):
    """A cheap stand-in for the content of a value array: equal arrays have equal ones."""
    flat = a.reshape(-1) if a.flags.c_contiguous else np.ravel(a)
    n = flat.size
    probe = flat[[0, n // 3, n // 2, (2 * n) // 3, n - 1]] if n else flat
    return a.dtype.str, a.shape, probe.tobytes()


class _CallArrays:
    """Content keys of the arrays of one call, each array object hashed at most once.

    Index arrays are always keyed (patterns recur across problems and calls). Value arrays
    are keyed when the same object appears in several problems of the call, or when several
    distinct arrays of the call have the same content (found by a cheap fingerprint of a few
    entries, then confirmed by the content hash): e.g. the H, A, C values of problems built
    separately that differ only in b. Other arrays travel inline. The index is built at the
    first :meth:`key` (derivative calls need it only for re-solves).
    """

    def __init__(self, problems):
        self._problems = problems
        self._objects = None            # id -> array (kept alive: ids stay unique)
        self._keys = {}                 # id -> key, or None (inline); missing: not decided

    def _build(self):
        self._objects, uses = {}, {}
        for p in self._problems:
            for a in _problem_arrays(p):
                i = id(a)
                self._objects[i] = a
                uses[i] = uses.get(i, 0) + 1
        groups = {}
        for i, a in self._objects.items():
            if a.nbytes < _BLOB_MIN_BYTES:
                self._keys[i] = None
            elif a.dtype.kind not in "iu" and uses[i] == 1:
                groups.setdefault(_fingerprint(a), []).append(i)
        for ids in groups.values():
            if len(ids) == 1:
                self._keys[ids[0]] = None
                continue
            digests = {i: _digest(self._objects[i]) for i in ids}
            counts = {}
            for d in digests.values():
                counts[d] = counts.get(d, 0) + 1
            for i, d in digests.items():
                self._keys[i] = d if counts[d] > 1 else None

    def key(self, a):
        """The content key of ``a`` or None when it travels inline."""
        if self._objects is None:
            self._build()
        i = id(a)
        key = self._keys.get(i, False)
        if key is False:                # index arrays, values used by several problems
            key = _digest(a) if self._objects.get(i) is a else None
            self._keys[i] = key
        return key


class _BlobTracker:
    """The parent's mirror of one worker's blob store (LRU within a byte budget)."""

    def __init__(self, budget):
        self.budget = budget
        self.sizes = OrderedDict()
        self.total = 0

    def __contains__(self, key):
        return key in self.sizes

    def touch(self, key):
        self.sizes.move_to_end(key)

    def add(self, key, nbytes):
        self.sizes[key] = nbytes
        self.total += nbytes

    def evict(self, keep):
        drops = []
        for key in list(self.sizes):
            if self.total <= self.budget:
                break
            if key not in keep:
                self.total -= self.sizes.pop(key)
                drops.append(key)
        return drops

    def clear(self):
        self.sizes.clear()
        self.total = 0


class _Encoder:
    """Builds one request for one worker slot (blobs new to that worker ride along)."""

    def __init__(self, pool, slot, arrays):
        self.pool = pool
        self.slot = slot
        self.arrays = arrays
        self.blobs = {}
        self.used = set()

    def array(self, a):
        key = self.arrays.key(a)
        if key is None:
            return a
        tracker = self.slot.blobs
        if key in tracker:
            tracker.touch(key)
            self.pool._stats["blob_refs"] += 1
        else:
            self.blobs[key] = a
            tracker.add(key, a.nbytes)
        self.used.add(key)
        return key

    def matrix(self, M):
        return (type(M), M.shape, self.array(M.data), self.array(M.indices),
                self.array(M.indptr))

    def problem(self, p):
        return {"H": self.matrix(p.H), "g": self.array(p.g), "A": self.matrix(p.A),
                "b": self.array(p.b), "C": self.matrix(p.C), "l": self.array(p.l),
                "u": self.array(p.u), "constant": p.constant, "name": p.name}

    def request(self, ops, releases):
        drops = self.slot.blobs.evict(self.used)
        return {"ops": ops, "blobs": self.blobs, "release": releases, "drop": drops}


# =============================================================================================
# parent side: tasks (one batch element each; built at send time, per worker)
# =============================================================================================
class _SolveTask:
    slot = None                          # any worker

    def __init__(self, index, problem, settings):
        self.index = index
        self.problem = problem
        self.settings = settings
        self.handle = None
        self.owner = None
        self.fields = None
        self.doing = "solving"

    def build(self, enc):
        self.handle = enc.pool._new_handle()
        return [("solve", self.handle, enc.problem(self.problem), self.settings)]

    def done(self, replies, slot, pool):
        rep = replies[0]
        if rep[0] != "ok":
            raise _remote_error(rep, self.index, "solving")
        self.fields = rep[1]
        self.owner = _Owner(pool, slot.index, slot.generation, self.handle, self.problem,
                            self.settings, self.index)
        return None


class _DerivativeTask:
    def __init__(self, index, owner, method, kwargs, fields):
        self.index = index
        self.owner = owner
        self.method = method
        self.kwargs = kwargs
        self.fields = fields             # the proxy: its solution is restored on a re-solve
        self.slot = owner.slot
        self.doing = f"computing {method} of"
        self.resolve = None                # None, "lost" or "evicted"
        self.value = None

    def build(self, enc):
        o = self.owner
        if self.resolve is None and o.generation != enc.slot.generation:
            self.resolve = "lost"            # its worker died since: the state is gone
        ops = []
        if self.resolve is not None:
            restore = {k: self.fields[k] for k in _RESTORED if k in self.fields}
            ops.append(("solve", o.handle, enc.problem(o.problem), o.settings, restore))
        ops.append((self.method, o.handle, self.kwargs))
        return ops

    def done(self, replies, slot, pool):
        o = self.owner
        if self.resolve is not None:
            rep = replies[0]
            if rep[0] != "ok":
                raise _remote_error(rep, o.index, "re-solving")
            o.generation = slot.generation
            pool._stats["resolves_" + self.resolve] += 1
            replies = replies[1:]
        rep = replies[0]
        if rep[0] == "miss":                 # evicted: re-solve on the same worker, then retry
            self.resolve = "evicted"
            return self
        self.resolve = None
        if rep[0] != "ok":
            raise _remote_error(rep, self.index, self.doing)
        pool._stats["derivatives"] += 1
        self.value = _expand(rep[1], o.problem)
        return None


class _CallTask:
    """An op for one given worker (info, call); not tied to a batch element."""

    def __init__(self, slot, op):
        self.slot = slot
        self.index = -1
        self.op = op
        self.value = None
        self.doing = "running a call in"

    def build(self, enc):
        return [self.op]

    def done(self, replies, slot, pool):
        rep = replies[0]
        if rep[0] != "ok":
            _, exc, text = rep
            raise _add_note(exc, "worker traceback:\n" + text.rstrip()) if text else exc
        self.value = rep[1]
        return None


class _Chunker:
    """How many tasks go in one message.

    Solves (any worker): about ``target`` seconds of work per message (measured on the
    replies of the call; one task per message until then), at most a ``1 / (2 n_workers)``
    share of the tasks left, so that the messages shrink towards the end of the batch and the
    workers finish together (guided self-scheduling). Tasks pinned to a worker (derivatives):
    a quarter of those it was given at once, so that replies stream back while it computes.
    """

    def __init__(self, chunksize, n_workers, target=0.05):
        if chunksize != "auto" and (not isinstance(chunksize, int) or chunksize < 1):
            raise ValueError(f"chunksize must be 'auto' or a positive int, got {chunksize!r}")
        self.fixed = None if chunksize == "auto" else chunksize
        self.target = target
        self.n_workers = max(1, n_workers)
        self.seconds = 0.0
        self.tasks = 0
        self.pinned = {}

    def observe(self, busy, n_tasks):
        self.seconds += busy
        self.tasks += n_tasks

    def size(self, remaining):
        if self.fixed is not None:
            return min(self.fixed, remaining)
        if not self.tasks or self.seconds <= 0:
            return 1
        want = math.ceil(self.target / (self.seconds / self.tasks))
        return max(1, min(want, remaining // (2 * self.n_workers), remaining))

    def pinned_size(self, slot, queued):
        size = self.pinned.get(slot)
        if size is None:
            size = self.pinned[slot] = max(1, math.ceil(queued / 4))
        return min(size, queued)


class _Progress:
    """tqdm over the batch when installed, else a counter on stderr; nothing when disabled."""

    def __init__(self, total, enabled, desc):
        self.enabled = bool(enabled) and total > 0
        self.total = total
        self.desc = desc
        self.count = 0
        self.bar = None
        if self.enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=desc)

    def update(self, k=1):
        if not self.enabled:
            return
        self.count += k
        if self.bar is not None:
            self.bar.update(k)
        else:
            sys.stderr.write(f"\r{self.desc}: {self.count}/{self.total}")
            sys.stderr.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\n")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# =============================================================================================
# parent side: result proxies
# =============================================================================================
class _Owner:
    """Where a proxy's state lives: pool, worker slot and generation, handle; and the problem."""

    __slots__ = ("pool", "slot", "generation", "handle", "problem", "settings", "index",
                 "closed")

    def __init__(self, pool, slot, generation, handle, problem, settings, index):
        self.pool = pool
        self.slot = slot
        self.generation = generation
        self.handle = handle
        self.problem = problem
        self.settings = settings
        self.index = index
        self.closed = False

    def release(self):
        if not self.closed:
            self.closed = True
            self.pool._release_later(self)


class RemoteResult(Result):
    """A :class:`~sparseqp.result.Result` whose solver state lives in a worker.

    It has every public field of the Result computed in the worker (x, y, z, s_eq, s_in, fun,
    status, success, message, nit, n_newton, n_factorizations, ...; see
    :class:`~sparseqp.result.Result`), and ``vjp``, ``jvp``, ``jacobian`` with the signatures of
    the in-process Result; they run in the worker that holds the factorization (the state is
    recomputed there first if it was evicted or its worker died). The worker's state is
    released when this object is garbage collected or :meth:`close` d. Pickling or copying gives
    a plain Result (fields only, no derivatives). Matrices of the returned
    :class:`~sparseqp.derivatives.Gradients` share their index arrays with the problem's.
    """

    def _owner_or_raise(self):
        owner = self.__dict__.get("_owner")
        if owner is None or owner.closed:
            raise ValueError("this result was closed: its solver state is released")
        return owner

    def vjp(self, dx=None, dy=None, dz=None, ds_eq=None, ds_in=None):
        """Gradients w.r.t. (H, g, A, b, C, l, u); see :func:`sparseqp.derivatives.vjp`."""
        kw = _drop_none(dict(dx=dx, dy=dy, dz=dz, ds_eq=ds_eq, ds_in=ds_in))
        return self._call("vjp", kw)

    def jvp(self, dH=None, dg=None, dA=None, db=None, dC=None, dl=None, du=None):
        """Directional derivative of the solution; see :func:`sparseqp.derivatives.jvp`."""
        kw = _drop_none(dict(dH=dH, dg=dg, dA=dA, db=db, dC=dC, dl=dl, du=du))
        return self._call("jvp", kw)

    def jacobian(self, wrt="b", index=None, of="x"):
        """Jacobian of ``of`` w.r.t. ``wrt``; see :func:`sparseqp.derivatives.jacobian`."""
        return self._call("jacobian", dict(wrt=wrt, index=index, of=of))

    def _call(self, method, kwargs, timeout=None):
        owner = self._owner_or_raise()
        item = (owner.index, owner, method, kwargs, self)
        return owner.pool._derivatives([item], timeout=timeout)[0]

    def close(self):
        """Release the worker's state now (derivatives are no longer available)."""
        fin = self.__dict__.get("_finalizer")
        if fin is not None:
            fin()

    @property
    def worker_pid(self):
        """Process id of the worker that holds the state (None when it is not running)."""
        owner = self._owner_or_raise()
        slot = owner.pool._slots[owner.slot]
        return slot.pid if slot.generation == owner.generation else None

    def __reduce__(self):
        return (Result, (dict(self),))

    @classmethod
    def _make(cls, fields, owner):
        res = cls(fields)
        object.__setattr__(res, "_owner", owner)
        object.__setattr__(res, "_finalizer", weakref.finalize(res, owner.release))
        return res


class _Detached:
    __slots__ = ("executor", "problem", "settings", "index")

    def __init__(self, executor, problem, settings, index):
        self.executor = executor
        self.problem = problem
        self.settings = settings
        self.index = index


def _detached_solve(problem, settings):
    """Task body for generic executors: solve, return the public fields."""
    return _public_fields(Solver(problem, **settings).solve())


def _detached_derivative(problem, settings, method, kwargs):
    """Task body for generic executors: re-solve, then one derivative."""
    result = Solver(problem, **settings).solve()
    return getattr(result, method)(**kwargs)


class DetachedResult(Result):
    """A Result solved by a generic executor (no sticky state).

    ``vjp``, ``jvp`` and ``jacobian`` submit a task to the same executor that re-solves the
    problem and computes the derivative (one solve per call; bitwise the same solution).
    """

    def vjp(self, dx=None, dy=None, dz=None, ds_eq=None, ds_in=None):
        """Gradients w.r.t. (H, g, A, b, C, l, u); see :func:`sparseqp.derivatives.vjp`."""
        kw = _drop_none(dict(dx=dx, dy=dy, dz=dz, ds_eq=ds_eq, ds_in=ds_in))
        return self._submit("vjp", kw).result()

    def jvp(self, dH=None, dg=None, dA=None, db=None, dC=None, dl=None, du=None):
        """Directional derivative of the solution; see :func:`sparseqp.derivatives.jvp`."""
        kw = _drop_none(dict(dH=dH, dg=dg, dA=dA, db=db, dC=dC, dl=dl, du=du))
        return self._submit("jvp", kw).result()

    def jacobian(self, wrt="b", index=None, of="x"):
        """Jacobian of ``of`` w.r.t. ``wrt``; see :func:`sparseqp.derivatives.jacobian`."""
        return self._submit("jacobian", dict(wrt=wrt, index=index, of=of)).result()

    def _submit(self, method, kwargs):
        d = self.__dict__["_detached"]
        return d.executor.submit(_detached_derivative, d.problem, d.settings, method, kwargs)

    def __reduce__(self):
        return (Result, (dict(self),))

    @classmethod
    def _make(cls, fields, detached):
        res = cls(fields)
        object.__setattr__(res, "_detached", detached)
        return res


def _drop_none(kw):
    return {k: v for k, v in kw.items() if v is not None}


# =============================================================================================
# parent side: the pool
# =============================================================================================
_HELLO = "hello"


class _Slot:
    """One worker position of a pool: the live worker (transport) and its bookkeeping."""

    def __init__(self, index, blob_budget):
        self.index = index
        self.worker = None
        self.generation = 0
        self.pid = None
        self.blobs = _BlobTracker(blob_budget)
        self.releases = []
        self.requests = deque()          # in flight, oldest first: _HELLO or (tasks, op counts)
        self.started = 0.0

    def elements(self, first_only=False):
        """Batch elements of the requests in flight (of the oldest one only: in progress)."""
        entries = list(self.requests)[:1] if first_only else self.requests
        return sorted({t.index for e in entries if e is not _HELLO for t in e[0]
                       if t.index >= 0})


def _shutdown_slots(slots, timeout=2.0):
    """Stop the workers of a pool (also the finalizer of a pool that is garbage collected)."""
    for slot in slots:
        if slot.worker is not None:
            try:
                slot.worker.shutdown(timeout, graceful=not slot.requests)
            except Exception:
                pass
            slot.worker = None
            slot.requests.clear()


class _PoolBase:
    """The transport-independent part of a sticky pool (dispatch, waits, faults, proxies)."""

    _chunk_target = 0.05        # seconds of work per message of solves (chunksize="auto")

    def __init__(self, n_workers, *, cache_size, timeout, start_timeout, blob_budget, depth):
        if cache_size is None or int(cache_size) < 0:
            raise ValueError(f"cache_size must be a non-negative int, got {cache_size!r}")
        if int(depth) < 1:
            raise ValueError(f"depth must be >= 1, got {depth!r}")
        self.depth = int(depth)
        self.cache_size = int(cache_size)
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.blob_budget = int(blob_budget)
        self._slots = []
        self._lock = threading.Lock()
        self._releases = deque()
        self._handles = itertools.count(1)
        self._closed = False
        self._stats = dict.fromkeys(
            ("messages", "bytes_sent", "bytes_received", "solves", "derivatives",
             "resolves_evicted", "resolves_lost", "blob_refs", "blobs_sent",
             "workers_started", "workers_replaced", "encode_s", "decode_s", "worker_busy_s",
             "worker_compute_s", "wall_s"), 0)
        self._finalizer = weakref.finalize(self, _shutdown_slots, self._slots)
        self._grow(n_workers)

    # ----- transport hooks ---------------------------------------------------------------
    def _new_worker(self, slot):                       # pragma: no cover - abstract
        raise NotImplementedError

    def _wait(self, slots, timeout):                   # pragma: no cover - abstract
        raise NotImplementedError

    # ----- public ------------------------------------------------------------------------
    @property
    def n_workers(self):
        """Number of worker slots."""
        return len(self._slots)

    @property
    def closed(self):
        return self._closed

    def solve_batch(self, problems, *, n_jobs=None, progress=False, timeout=None,
                    chunksize="auto", upper=False, **settings):
        """Solve ``problems`` on this pool; see :func:`solve_batch`.

        ``n_jobs`` limits how many of the pool's workers take new problems (default: all);
        ``chunksize`` is the number of problems per message ("auto": about 50 ms of work).
        Returns a list of :class:`RemoteResult`.
        """
        st = make_settings(**settings)
        problems = _as_problems(problems, upper=upper, check_symmetric=st.check_symmetric)
        n_active = self.n_workers if n_jobs is None else _resolve_n_jobs(n_jobs)
        if n_active > self.n_workers:
            raise ValueError(f"n_jobs={n_jobs} exceeds this pool's {self.n_workers} workers")
        tasks = [_SolveTask(i, p, settings) for i, p in enumerate(problems)]
        with self._lock:
            self._check_open()
            try:
                with _Progress(len(tasks), progress, "solve_batch") as bar:
                    self._run(tasks, _CallArrays(problems), timeout=timeout, progress=bar,
                              chunker=_Chunker(chunksize, n_active, self._chunk_target),
                              n_active=n_active)
            except BaseException:
                for t in tasks:        # computed states nobody will own
                    if t.owner is not None:
                        t.owner.release()
                raise
            t0 = time.perf_counter()
            out = [RemoteResult._make(t.fields, t.owner) for t in tasks]
            self._stats["decode_s"] += time.perf_counter() - t0
            self._stats["solves"] += len(tasks)
        return out

    def cache_sizes(self, timeout=None):
        """Number of states held by each worker (0 for one not running); delivers releases."""
        with self._lock:
            self._check_open()
            running = [s for s in self._slots if s.worker is not None]
            tasks = [_CallTask(s.index, ("info",)) for s in running]
            self._run(tasks, _CallArrays(()), timeout=timeout)
            sizes = [0] * self.n_workers
            for s, t in zip(running, tasks):
                sizes[s.index] = t.value["cached"]
            return sizes

    def worker_info(self, timeout=None):
        """Per-worker statistics (pid, cached, solved, evicted, hits, misses, blobs ...)."""
        return self.broadcast(None, timeout=timeout)

    def broadcast(self, fn, *args, timeout=None):
        """Run ``fn(*args)`` in every worker (starting them as needed); list of the results.

        ``fn`` must be picklable (a module-level function). ``fn=None`` returns each worker's
        cache statistics.
        """
        op = ("info",) if fn is None else ("call", fn, args)
        with self._lock:
            self._check_open()
            tasks = [_CallTask(s.index, op) for s in self._slots]
            self._run(tasks, _CallArrays(()), timeout=timeout)
            return [t.value for t in tasks]

    def start(self, timeout=None):
        """Start every worker and wait until each has answered (pool start-up off the clock)."""
        self.broadcast(os.getpid, timeout=timeout)
        return self

    def pids(self):
        """Process ids of the running workers (None for a slot without one)."""
        return [s.pid for s in self._slots]

    def stats(self):
        """Counters of this pool (messages, bytes, solves, re-solves, replaced workers, times)."""
        return dict(self._stats)

    def close(self, timeout=2.0):
        """Stop the workers. Results of this pool lose their derivatives."""
        with self._lock:
            self._closed = True
            _shutdown_slots(self._slots, timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----- internals ---------------------------------------------------------------------
    def _check_open(self):
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")

    def _grow(self, n_workers):
        n_workers = int(n_workers)
        if n_workers < 1:
            raise ValueError(f"a pool needs at least one worker, got {n_workers}")
        while len(self._slots) < n_workers:
            self._slots.append(_Slot(len(self._slots), self.blob_budget))

    def _new_handle(self):
        return next(self._handles)

    def _release_later(self, owner):
        # called from finalizers (any thread, any moment): only append to a deque
        self._releases.append((owner.slot, owner.generation, owner.handle))

    def _take_releases(self, slot):
        while self._releases:
            i, generation, handle = self._releases.popleft()
            if i < len(self._slots) and self._slots[i].generation == generation:
                self._slots[i].releases.append(handle)
        out, slot.releases = slot.releases, []
        return out

    def _derivatives(self, items, *, timeout=None, progress=False):
        """Run [(element, owner, method, kwargs, result), ...]: a few messages per worker.

        ``element`` is the index that errors name. Returns the values, in order.
        """
        with self._lock:
            self._check_open()
            tasks = [_DerivativeTask(*item) for item in items]
            arrays = _CallArrays([item[1].problem for item in items])
            with _Progress(len(tasks), progress, "derivatives") as bar:
                self._run(tasks, arrays, timeout=timeout, progress=bar)
            return [t.value for t in tasks]

    def _ready(self, slot):
        """True when the (idle) slot's worker can take a request; (re)starts it otherwise."""
        if slot.worker is not None and not slot.worker.alive():
            self._retire(slot)            # died while idle: its states are lost
        if slot.worker is None:
            slot.worker = self._new_worker(slot)
            slot.pid = getattr(slot.worker, "pid", None)
            slot.requests.append(_HELLO)
            slot.started = time.monotonic()
            self._stats["workers_started"] += 1
            return False
        return True

    def _retire(self, slot):
        if slot.worker is not None:
            try:
                slot.worker.kill()
            except Exception:
                pass
            self._stats["workers_replaced"] += 1
        slot.worker = None
        slot.pid = None
        slot.generation += 1
        slot.blobs.clear()
        slot.releases = []
        slot.requests.clear()

    def _abort(self):
        """Kill the workers with a request in flight (their streams may be mid-message)."""
        for slot in self._slots:
            if slot.requests:
                self._retire(slot)

    def _send(self, slot, batch, arrays):
        t0 = time.perf_counter()
        enc = _Encoder(self, slot, arrays)
        ops, counts = [], []
        for task in batch:
            task_ops = task.build(enc)
            ops.extend(task_ops)
            counts.append(len(task_ops))
        packet, size = slot.worker.encode(enc.request(ops, self._take_releases(slot)))
        self._stats["encode_s"] += time.perf_counter() - t0
        self._stats["blobs_sent"] += len(enc.blobs)
        slot.requests.append((batch, counts))    # before sending: an interrupt must kill it
        try:
            slot.worker.send(packet)
        except (OSError, EOFError, _WorkerDied):
            # gone before it received this request: nothing of it was lost, it goes back to
            # the queue; a death with earlier requests in flight is reported by _collect
            slot.requests.pop()
            if not slot.requests:
                self._retire(slot)
            return False
        self._stats["messages"] += 1
        self._stats["bytes_sent"] += size
        return True

    def _dispatch(self, free, pinned, chunker, n_active, arrays):
        """Send what can be sent now: up to ``depth`` requests in flight per worker."""
        sent = True
        while sent:
            sent = False
            for slot in self._slots:
                if len(slot.requests) >= self.depth:
                    continue
                if slot.requests:
                    if slot.requests[0] is _HELLO:
                        continue
                queue = pinned.get(slot.index)
                if queue:
                    # derivatives and calls: a few messages per worker, so that the transfer
                    # and decoding of one reply overlaps the computation of the next
                    if not slot.requests and not self._ready(slot):
                        continue
                    size = chunker.pinned_size(slot.index, len(queue))
                    batch, back = [queue.popleft() for _ in range(size)], queue
                else:
                    if slot.index >= n_active or not free:
                        continue
                    if slot.requests:
                        # queue a second request only when every worker has work left to
                        # take, so that the tail of the batch stays balanced
                        if len(free) <= n_active:
                            continue
                    elif not self._ready(slot):
                        continue
                    batch, back = [free.popleft() for _ in range(chunker.size(len(free)))], free
                if self._send(slot, batch, arrays):
                    sent = True
                else:
                    back.extendleft(reversed(batch))

    def _died(self, slot, died):
        """The WorkerError for a worker found dead with requests in flight (and retire it)."""
        pid = slot.pid
        starting = slot.requests and slot.requests[0] is _HELLO
        current = slot.elements(first_only=True)
        queued = sorted(set(slot.elements()) - set(current))
        doing = "working on"
        if slot.requests and not starting and slot.requests[0][0]:
            doing = slot.requests[0][0][0].doing
        self._retire(slot)
        if starting:
            return WorkerError(f"sparseqp worker process failed to start ({died})", pid=pid,
                               reason=str(died))
        what = _elements_text(current) if current else "a request"
        more = f" ({_elements_text(queued)} queued behind)" if queued else ""
        return WorkerError(
            f"sparseqp worker process {pid} died ({died}) while {doing} {what}{more}; the pool "
            "replaces it and later calls work (states it held are recomputed on demand)",
            elements=current, pid=pid, reason=str(died))

    def _collect(self, slot, pinned, chunker, progress):
        """Read the oldest reply of ``slot``; returns the first error of its tasks (or None)."""
        try:
            packet, size = slot.worker.recv()
        except _WorkerDied as died:
            return self._died(slot, died)
        # The request stays in flight until every task of the reply owns its state: an
        # interrupt before that (KeyboardInterrupt while decoding) kills the worker with the
        # states (_abort) instead of leaving them on an idle worker with no owner.
        entry = slot.requests[0]
        self._stats["bytes_received"] += size
        if entry is _HELLO:
            slot.pid = slot.worker.decode(packet)[1]
            slot.requests.popleft()
            return None
        t0 = time.perf_counter()
        reply = slot.worker.decode(packet)
        del packet
        self._stats["decode_s"] += time.perf_counter() - t0
        self._stats["worker_busy_s"] += reply["busy"]
        self._stats["worker_compute_s"] += reply.get("compute", 0.0)
        tasks, counts = entry
        if chunker is not None and tasks and isinstance(tasks[0], _SolveTask):
            chunker.observe(reply["busy"], len(tasks))
        results, pos, error = reply["results"], 0, None
        for task, k in zip(tasks, counts):
            replies, pos = results[pos:pos + k], pos + k
            try:
                follow = task.done(replies, slot, self)
            except Exception as exc:
                error = error or exc
                continue
            if follow is not None:
                pinned.setdefault(slot.index, deque()).append(follow)
            elif progress is not None:
                progress.update(1)
        slot.requests.popleft()
        return error

    def _run(self, tasks, arrays, *, timeout=None, progress=None, chunker=None, n_active=None):
        """Dispatch ``tasks`` and wait for all of them (the engine of every pool call)."""
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        n_active = self.n_workers if n_active is None else n_active
        chunker = chunker or _Chunker("auto", n_active)
        free, pinned = deque(), {}
        for t in tasks:
            if t.slot is None:
                free.append(t)
            else:
                pinned.setdefault(t.slot, deque()).append(t)
        error = None
        t_start = time.perf_counter()
        try:
            while True:
                if error is None:
                    self._dispatch(free, pinned, chunker, n_active, arrays)
                busy = [s for s in self._slots if s.requests]
                if not busy:
                    if error is None and (free or any(pinned.values())):
                        continue
                    break
                error = self._wait_and_collect(busy, deadline, pinned, chunker, progress,
                                               error)
        except BaseException:
            self._abort()
            raise
        finally:
            self._stats["wall_s"] += time.perf_counter() - t_start
        if error is not None:
            raise error

    def _wait_and_collect(self, busy, deadline, pinned, chunker, progress, error):
        now = time.monotonic()
        limits = [1.0]
        if deadline is not None:
            limits.append(deadline - now)
        starting = [s for s in busy if s.requests[0] is _HELLO]
        if starting and self.start_timeout is not None:
            limits.append(min(s.started for s in starting) + self.start_timeout - now)
        ready = self._wait(busy, max(0.0, min(limits)))
        for slot in ready:
            err = self._collect(slot, pinned, chunker, progress)
            error = error or err
        if ready:
            return error
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            stuck = [s for s in busy if s.requests]
            elements = sorted({i for s in stuck for i in s.elements(first_only=True)})
            pids = [s.pid for s in stuck]
            raise WorkerTimeout(
                f"no reply from sparseqp worker(s) {pids} within the timeout while working on "
                f"{_elements_text(elements) if elements else 'a request'}; they were "
                "terminated and will be replaced", elements=elements, reason="timeout")
        for slot in starting:
            if (self.start_timeout is not None and slot.requests and slot.requests[0] is _HELLO
                    and now - slot.started >= self.start_timeout):
                pid = slot.pid
                self._retire(slot)
                error = error or WorkerError(
                    f"sparseqp worker {pid} did not start within {self.start_timeout} s",
                    pid=pid, reason="start timeout")
        return error


# ---------------------------------------------------------------------------------------------
def _readable(conn):
    """Whether ``conn`` has data (or end-of-file) to read now; cheaper than ``conn.poll(0)``."""
    if not hasattr(select, "poll"):
        return conn.poll(0)
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class _ProcessWorker:
    """Transport to one local worker process: a duplex pipe (a socket pair, with
    :class:`_Channel` frames) plus the process sentinel."""

    def __init__(self, ctx, cache_size, name):
        parent_end, child_end = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child_end, cache_size),
                                   name=name, daemon=True)
        self.process.start()
        child_end.close()
        self.conn = parent_end
        self.chan = _Channel(parent_end)
        self.pid = self.process.pid

    def encode(self, obj):
        """(packet, bytes): the pickle stream and its out-of-band buffers."""
        buffers = []
        stream = pickle.dumps(obj, protocol=5,
                              buffer_callback=_out_of_band(buffers) if self.chan.sock else None)
        return (stream, buffers), len(stream) + sum(b.raw().nbytes for b in buffers)

    def send(self, packet):
        self.chan.send(None, packet)

    @staticmethod
    def decode(packet):
        return _Channel.loads(packet)

    def recv(self):
        try:
            # dead with nothing to read (the forkserver may hold the other end: no EOF)
            if not _readable(self.conn) and self.process.exitcode is not None:
                raise EOFError
            frame = self.chan.recv_frame()
            return frame, frame[2]
        except (EOFError, OSError):
            self.process.join(1.0)
            raise _WorkerDied(self.reason()) from None

    def alive(self):
        """Liveness of an idle worker (no request in flight).

        An idle worker never writes, so a readable pipe means end-of-file: the process is gone.
        Both this and /proc see a death at once, while ``exitcode`` (which the forkserver
        reports) lags behind it.
        """
        if self.process.exitcode is not None:
            return False
        try:
            if self.conn.poll(0):
                return False
        except (OSError, EOFError):
            return False
        # the forkserver may still hold the pipe's other end; Linux shows the exit directly
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        except (OSError, IndexError):
            return True                      # no /proc: the exit code is what we have
        return state not in (b"Z", b"X")

    def reason(self):
        code = self.process.exitcode
        if code is None:
            return "connection lost"
        if code < 0:
            try:
                return f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"

    def kill(self):
        if self.process.exitcode is None:
            self.process.kill()
        self.process.join(5.0)
        self.chan.close()
        self.conn.close()

    def shutdown(self, timeout, graceful=True):
        if graceful and self.process.exitcode is None:
            try:
                self.chan.shutdown_message()
                self.process.join(timeout)
            except OSError:
                pass
        self.kill()


def _default_context():
    methods = mp.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


class WorkerPool(_PoolBase):
    """A pool of persistent local worker processes that keep their solver states.

    Parameters
    ----------
    n_workers : int, optional
        Number of workers (default: the CPUs this process may use; -1 likewise, -2 all but one).
    cache_size : int
        States kept per worker (LRU); an evicted state is recomputed when a derivative needs
        it. Default 128.
    context : {"forkserver", "spawn", "fork"}, optional
        Start method (default forkserver where available, else spawn). "fork" is allowed but
        unsafe when the parent runs threads (torch, BLAS pools). Workers start lazily, at the
        first call that needs them (or :meth:`start`).
    timeout : float, optional
        Default limit in seconds for every call (None: no limit; deaths are still detected).
    start_timeout : float
        Seconds a worker may take to start. Default 120.
    blob_budget : int
        Bytes of shared arrays (patterns, repeated values) kept per worker. Default 256 MiB.
    depth : int
        Requests queued per worker while it computes (default 2: the next problem is already
        there when a solve ends, so the parent's latency is hidden; 1: strictly one at a time).

    Examples
    --------
    >>> import sparseqp
    >>> from sparseqp.batch import WorkerPool, solve_batch
    >>> from sparseqp.problems import random_qp
    >>> with WorkerPool(2) as pool:
    ...     results = solve_batch([random_qp(30, seed=s) for s in range(4)], executor=pool)
    ...     grads = results[0].vjp(dx=results[0].x)
    >>> [r.status.name for r in results]
    ['SOLVED', 'SOLVED', 'SOLVED', 'SOLVED']
    """

    def __init__(self, n_workers=None, *, cache_size=128, context=None, timeout=None,
                 start_timeout=120.0, blob_budget=256 << 20, depth=2):
        self.context = context or _default_context()
        self._ctx = mp.get_context(self.context)
        if self.context == "forkserver":
            # the server imports numpy/scipy/sparseqp once; each worker is then a cheap fork
            self._ctx.set_forkserver_preload(["__main__", "sparseqp.batch"])
        super().__init__(_resolve_n_jobs(-1 if n_workers is None else n_workers),
                         cache_size=cache_size, timeout=timeout, start_timeout=start_timeout,
                         blob_budget=blob_budget, depth=depth)

    def _new_worker(self, slot):
        return _ProcessWorker(self._ctx, self.cache_size, f"sparseqp-worker-{slot.index}")

    def _wait(self, slots, timeout):
        objects = {}
        for s in slots:
            objects[s.worker.conn.fileno()] = s
            objects[s.worker.process.sentinel] = s
        if hasattr(select, "poll"):        # what mp.connection.wait does, without its selector
            poller = select.poll()
            for fd in objects:
                poller.register(fd, select.POLLIN)
            ready = [fd for fd, _ in poller.poll(None if timeout is None else 1e3 * timeout)]
        else:
            ready = mp.connection.wait(list(objects), timeout)
        seen, out = set(), []
        for obj in ready:
            s = objects[obj]
            if s.index not in seen:
                seen.add(s.index)
                out.append(s)
        return out


# =============================================================================================
# default pools and the public functions
# =============================================================================================
def _available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _resolve_n_jobs(n_jobs):
    """joblib's convention: -1 all CPUs, -2 all but one, ...; positive: that many."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a nonzero int or None, got {n_jobs!r}")
    n_jobs = int(n_jobs)
    return n_jobs if n_jobs > 0 else max(1, _available_cpus() + 1 + n_jobs)


class _DefaultPools:
    """The pools used when no pool object is given (one local, one Ray), grown on demand."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pools = {}

    def get(self, kind, n_workers):
        """The default pool of ``kind``, grown to ``n_workers`` (None: the kind's default)."""
        with self._lock:
            pool = self._pools.get(kind)
            if pool is None or pool.closed:
                if kind == "ray":
                    from .ray_backend import RayPool
                    pool = RayPool(n_workers)
                else:
                    pool = WorkerPool(n_workers)
                self._pools[kind] = pool
            elif n_workers is not None and pool.n_workers < n_workers:
                pool._grow(n_workers)
            return pool


_DEFAULTS = _DefaultPools()


def get_pool(n_jobs=None, kind="process"):
    """The default pool of ``kind`` ("process" or "ray"), grown to ``n_jobs`` workers.

    ``n_jobs=None``: the pool as it is, or a new one with the kind's default size (all CPUs
    of this machine, or of the Ray cluster).
    """
    if kind not in ("process", "ray"):
        raise ValueError(f"kind must be 'process' or 'ray', got {kind!r}")
    return _DEFAULTS.get(kind, None if n_jobs is None else _resolve_n_jobs(n_jobs))


def _as_problem(item, upper, check_symmetric):
    if isinstance(item, Problem):
        return item
    inner = getattr(item, "problem", None)
    if isinstance(inner, Problem):            # e.g. problems.MPCProblem
        return inner
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - set(_PROBLEM_KEYS) - {"constant", "name"})
        if unknown:
            raise ValueError(f"unknown problem key(s) {unknown}; valid keys are "
                             f"{list(_PROBLEM_KEYS) + ['constant', 'name']}")
        return make_problem(**item, upper=upper, check_symmetric=check_symmetric)
    if isinstance(item, (tuple, list)):
        if not 2 <= len(item) <= 7:
            raise ValueError(f"a problem tuple is (H, g, A, b, C, l, u) (2 to 7 entries), got "
                             f"{len(item)} entries")
        return make_problem(*item, upper=upper, check_symmetric=check_symmetric)
    raise TypeError(f"expected a Problem, a tuple (H, g, A, b, C, l, u) or a dict, got "
                    f"{type(item).__name__}")


def _as_problems(problems, upper=False, check_symmetric=True):
    out = []
    for i, item in enumerate(problems):
        try:
            out.append(_as_problem(item, upper, check_symmetric))
        except Exception as exc:
            raise _add_note(exc, f"in {_elements_text([i])}")
    return out


def _select(n_jobs, executor):
    """None (in-process), a pool, or a generic executor."""
    if executor is None:
        if n_jobs is None or _resolve_n_jobs(n_jobs) == 1:
            return None, None
        n = _resolve_n_jobs(n_jobs)
        return _DEFAULTS.get("process", n), n
    if isinstance(executor, str):
        if executor not in ("process", "ray"):
            raise ValueError(f"executor must be 'process', 'ray', a pool or an object with "
                             f"submit(), got {executor!r}")
        n = None if n_jobs is None else _resolve_n_jobs(n_jobs)
        pool = get_pool(n, executor)
        return pool, n
    if isinstance(executor, _PoolBase):
        return executor, None if n_jobs is None else _resolve_n_jobs(n_jobs)
    if callable(getattr(executor, "submit", None)):
        return executor, None
    raise TypeError(f"executor must be None, 'process', 'ray', a WorkerPool/RayPool or an "
                    f"object with submit(fn, *args), got {type(executor).__name__}")


def solve_batch(problems, *, n_jobs=None, executor=None, progress=False, timeout=None,
                chunksize="auto", upper=False, **settings):
    """Solve a list of QPs, in parallel, keeping each one differentiable.

    Parameters
    ----------
    problems : sequence
        Each a :class:`~sparseqp.problem.Problem`, an object with a ``.problem`` (e.g.
        :class:`~sparseqp.problems.MPCProblem`), a tuple ``(H, g, A, b, C, l, u)`` (trailing
        entries may be left out) or a dict with those keys (plus ``constant``, ``name``). The
        problems may have the same or different sizes and sparsity patterns.
    n_jobs : int, optional
        None or 1: solve in this process (no pool) unless ``executor`` is given. -1: all CPUs,
        -2: all but one, k > 0: k workers.
    executor : None, "process", "ray", WorkerPool, RayPool or an object with ``submit``
        Where to solve; see the module docstring ("Executors").
    progress : bool
        Show a tqdm progress bar (a counter on stderr when tqdm is not installed).
    timeout : float, optional
        Seconds the whole call may take (pools and generic executors); exceeding it raises
        :class:`WorkerTimeout` (busy workers are terminated).
    chunksize : int or "auto"
        Pools: problems per message ("auto": about 50 ms of work per message, at most
        1 / (2 n_workers) of the problems left, so that the messages shrink towards the end
        and the workers finish together).
    upper : bool
        For tuple/dict inputs: read only the upper triangle of H.
    **settings
        Solver settings (:class:`~sparseqp.settings.Settings` fields), the same for every
        problem.

    Returns
    -------
    list
        In the order of ``problems``: :class:`~sparseqp.result.Result` (in-process),
        :class:`RemoteResult` (pools) or :class:`DetachedResult` (generic executors). Each has
        ``vjp``, ``jvp`` and ``jacobian``. Each is computed as
        ``Solver(problem, **settings).solve()`` is, so it is bitwise equal to it wherever the
        solver is reproducible (its PCG-or-refactorize choice uses measured timings unless
        ``pcg_max_iter=0``).

    Raises
    ------
    WorkerError
        A worker died while solving; the message and ``.elements`` name the batch elements.
    WorkerTimeout
        The call exceeded ``timeout``.
    Exception
        An exception raised by the solver for one element is re-raised with a note naming it.

    Examples
    --------
    >>> import numpy as np
    >>> from sparseqp.batch import solve_batch
    >>> from sparseqp.problems import mpc_qp
    >>> mpc = mpc_qp(nx=4, nu=2, horizon=10, seed=0)
    >>> batch = [mpc.with_x0(np.full(4, 0.1 * k)) for k in range(4)]
    >>> results = solve_batch(batch)              # in-process; n_jobs=2 for two workers
    >>> [r.status.name for r in results]
    ['SOLVED', 'SOLVED', 'SOLVED', 'SOLVED']
    >>> results[1].jacobian(wrt="b", index=mpc.x0_rows).shape
    (64, 4)
    """
    st = make_settings(**settings)                  # bad settings fail before any work
    target, n = _select(n_jobs, executor)
    if isinstance(target, _PoolBase):
        return target.solve_batch(problems, n_jobs=n, progress=progress, timeout=timeout,
                                  chunksize=chunksize, upper=upper, **settings)
    problems = _as_problems(problems, upper=upper, check_symmetric=st.check_symmetric)
    if target is None:
        return _solve_in_process(problems, settings, progress)
    return _solve_detached(target, problems, settings, progress, timeout)


def _solve_in_process(problems, settings, progress):
    out = []
    with _Progress(len(problems), progress, "solve_batch") as bar:
        for i, p in enumerate(problems):
            try:
                out.append(Solver(p, **settings).solve())
            except Exception as exc:
                raise _add_note(exc, f"in {_elements_text([i])}")
            bar.update(1)
    return out


def _result_of(future, index, deadline):
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        return future.result(timeout=remaining)
    except TimeoutError:
        raise WorkerTimeout(f"no result for {_elements_text([index])} within the timeout",
                            elements=[index], reason="timeout") from None
    except Exception as exc:
        raise _add_note(exc, f"in {_elements_text([index])} (generic executor)")


def _solve_detached(executor, problems, settings, progress, timeout):
    deadline = None if timeout is None else time.monotonic() + timeout
    futures = [executor.submit(_detached_solve, p, settings) for p in problems]
    out = []
    try:
        with _Progress(len(problems), progress, "solve_batch") as bar:
            for i, (p, f) in enumerate(zip(problems, futures)):
                fields = _result_of(f, i, deadline)
                out.append(DetachedResult._make(fields, _Detached(executor, p, settings, i)))
                bar.update(1)
    except BaseException:
        for f in futures:
            cancel = getattr(f, "cancel", None)
            if cancel is not None:
                cancel()
        raise
    return out


def _per_element(name, values, size):
    if values is None:
        return [None] * size
    if len(values) != size:
        raise ValueError(f"{name} has {len(values)} entries, expected one per result ({size})")
    return list(values)


def _derivative_batch(results, method, kwargs_list, timeout, progress):
    """Group requests by where their states live; a few messages per worker."""
    out = [None] * len(results)
    by_pool, detached, local = {}, [], []
    for i, (r, kw) in enumerate(zip(results, kwargs_list)):
        owner = r.__dict__.get("_owner") if isinstance(r, RemoteResult) else None
        if owner is not None:
            if owner.closed:
                raise ValueError(f"result {i} was closed: its solver state is released")
            by_pool.setdefault(id(owner.pool), (owner.pool, []))[1].append((i, owner, kw, r))
        elif isinstance(r, DetachedResult):
            detached.append((i, r, kw))
        elif isinstance(r, Result):
            local.append((i, r, kw))
        else:
            raise TypeError(f"result {i} is a {type(r).__name__}, not a sparseqp Result")
    futures = [(i, r._submit(method, kw)) for i, r, kw in detached]
    for pool, items in by_pool.values():
        values = pool._derivatives([(i, o, method, kw, r) for i, o, kw, r in items],
                                   timeout=timeout, progress=progress)
        for (i, *_), v in zip(items, values):
            out[i] = v
    for i, r, kw in local:
        try:
            out[i] = getattr(r, method)(**kw)
        except Exception as exc:
            raise _add_note(exc, f"in {_elements_text([i])}")
    deadline = None if timeout is None else time.monotonic() + timeout
    for i, f in futures:
        out[i] = _result_of(f, i, deadline)
    return out


def vjp_batch(results, dx=None, dy=None, dz=None, ds_eq=None, ds_in=None, *, timeout=None,
              progress=False):
    """Vector-Jacobian products of a batch: ``[r.vjp(dx[i], ...) for i, r in ...]``.

    Parameters
    ----------
    results : sequence of Result
        From :func:`solve_batch` (any executor; results of several pools may be mixed).
    dx, dy, dz, ds_eq, ds_in : sequence, optional
        One cotangent per result (arrays of the result's sizes, or None); a 2-D array of shape
        (B, n) works when the sizes agree. See :func:`sparseqp.derivatives.vjp`.
    timeout : float, optional
        Limit in seconds per pool involved.

    Returns
    -------
    list of :class:`~sparseqp.derivatives.Gradients`
        In order. For pooled results the requests go out in a few messages per worker
        (replies stream back while it computes), all workers computing in parallel.
    """
    B = len(results)
    cols = {k: _per_element(k, v, B) for k, v in
            dict(dx=dx, dy=dy, dz=dz, ds_eq=ds_eq, ds_in=ds_in).items()}
    kwargs = [_drop_none({k: cols[k][i] for k in _VJP_ARGS}) for i in range(B)]
    return _derivative_batch(results, "vjp", kwargs, timeout, progress)


def jvp_batch(results, dH=None, dg=None, dA=None, db=None, dC=None, dl=None, du=None, *,
              timeout=None, progress=False):
    """Jacobian-vector products of a batch: one tangent direction per result.

    Each of ``dH, dg, dA, db, dC, dl, du`` is None or a sequence with one entry (array, sparse
    matrix or None) per result; see :func:`sparseqp.derivatives.jvp`. Returns a list of
    :class:`~sparseqp.derivatives.Tangents`, in order (a few messages per worker).
    """
    B = len(results)
    cols = {k: _per_element(k, v, B) for k, v in
            dict(dH=dH, dg=dg, dA=dA, db=db, dC=dC, dl=dl, du=du).items()}
    kwargs = [_drop_none({k: cols[k][i] for k in _JVP_ARGS}) for i in range(B)]
    return _derivative_batch(results, "jvp", kwargs, timeout, progress)
