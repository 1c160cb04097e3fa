"""Tests of sparseqp.batch: sticky worker pool, derivatives through it, faults, executors.

Exact comparisons use ``pcg_max_iter=0``: the solver's choice between a PCG step and a
refactorization depends on measured timings otherwise, so two runs of the same solve (in one
process or two) may differ in the last bits.
"""
from __future__ import annotations

import concurrent.futures
import gc
import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest

import sparseqp
import sparseqp.batch as batch_module
from sparseqp.batch import (DetachedResult, RemoteResult, WorkerError, WorkerPool,
                            WorkerTimeout, get_pool, jvp_batch, solve_batch, vjp_batch)
from sparseqp.problems import mpc_qp, nonconvex_qp, random_qp

EXACT = dict(pcg_max_iter=0)
FIELDS = ("x", "y", "z", "s_eq", "s_in", "fun", "status", "nit", "n_factorizations")


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def mpc_batch(k, horizon=15, seed=0, nx=4, nu=2):
    mpc = mpc_qp(nx=nx, nu=nu, horizon=horizon, seed=seed)
    rng = np.random.default_rng(seed)
    return mpc, [mpc.with_x0(rng.uniform(-1.0, 1.0, nx)) for _ in range(k)]


def sequential(problems, **settings):
    return [sparseqp.Solver(p, **settings).solve() for p in problems]


def assert_same_results(got, want):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        for f in FIELDS:
            a, b = g[f], w[f]
            if isinstance(b, np.ndarray):
                assert np.array_equal(a, b), f"element {i}: {f} differs"
            else:
                assert a == b, f"element {i}: {f} = {a!r}, sequential {b!r}"


def assert_same_gradients(got, want):
    for i, (g, w) in enumerate(zip(got, want)):
        for f in ("H", "A", "C"):
            G, W = getattr(g, f), getattr(w, f)
            assert G.shape == W.shape
            assert np.array_equal(G.indptr, W.indptr) and np.array_equal(G.indices, W.indices)
            assert np.array_equal(G.data, W.data), f"element {i}: grad {f} differs"
        for f in ("g", "b", "l", "u"):
            assert np.array_equal(getattr(g, f), getattr(w, f)), f"element {i}: grad {f} differs"


def pid_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(pid, 0); it has no threads left to run
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except (FileNotFoundError, ProcessLookupError):   # reaped between the two looks
        return True


@pytest.fixture(scope="module")
def pool():
    p = WorkerPool(2, cache_size=64).start()
    yield p
    p.close()


@pytest.fixture
def clean_pool(pool):
    """The shared pool, with no state left over from a previous test, all workers running."""
    gc.collect()
    assert pool.cache_sizes() == [0, 0]
    pool.start()
    yield pool
    gc.collect()


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------
def test_in_process_is_sequential():
    _, problems = mpc_batch(3)
    got = solve_batch(problems, **EXACT)
    assert all(type(r) is sparseqp.Result for r in got)
    assert_same_results(got, sequential(problems, **EXACT))


@pytest.mark.parametrize("kind", ["same_pattern", "different_patterns", "tuples", "dicts"])
def test_pool_equals_sequential(clean_pool, kind):
    if kind == "same_pattern":
        _, problems = mpc_batch(8)
        inputs = problems
    else:
        problems = [random_qp(20 + 7 * k, seed=k) for k in range(6)]
        inputs = problems
        if kind == "tuples":
            inputs = [(p.H, p.g, p.A, p.b, p.C, p.l, p.u) for p in problems]
        elif kind == "dicts":
            inputs = [dict(H=p.H.tocoo(), g=p.g, A=p.A.toarray(), b=p.b, C=p.C, l=p.l, u=p.u)
                      for p in problems]
    got = solve_batch(inputs, executor=clean_pool, **EXACT)
    assert all(isinstance(r, RemoteResult) for r in got)
    assert_same_results(got, sequential(problems, **EXACT))


def test_default_pool_via_n_jobs():
    _, problems = mpc_batch(4)
    got = solve_batch(problems, n_jobs=2, **EXACT)
    assert isinstance(got[0], RemoteResult)
    assert get_pool().n_workers >= 2
    assert_same_results(got, sequential(problems, **EXACT))
    assert_same_gradients(vjp_batch(got, dx=[r.x for r in got]),
                          [r.vjp(dx=r.x) for r in sequential(problems, **EXACT)])


def test_pattern_sent_once_per_worker(clean_pool):
    _, problems = mpc_batch(12, horizon=40, nx=10, nu=5)     # arrays above the inline size
    before = clean_pool.stats()
    solve_batch(problems, executor=clean_pool, **EXACT)
    after = clean_pool.stats()
    # at most one copy of each shared array per worker; the other problems refer to it
    assert after["blobs_sent"] - before["blobs_sent"] <= 2 * 12
    assert after["blob_refs"] - before["blob_refs"] > 0


def test_equal_values_sent_once_per_worker():
    # problems built separately: H, A, C, g, l, u values are equal arrays, not shared objects
    _, problems = mpc_batch(12, horizon=40, nx=10, nu=5)
    rebuilt = [sparseqp.Problem(H=p.H.copy(), g=p.g.copy(), A=p.A.copy(), b=p.b.copy(),
                                C=p.C.copy(), l=p.l.copy(), u=p.u.copy()) for p in problems]
    assert rebuilt[0].A.data is not rebuilt[1].A.data

    def traffic(batch):
        with WorkerPool(2) as fresh:        # empty blob stores
            results = solve_batch(batch, executor=fresh, chunksize=1, **EXACT)
            stats = fresh.stats()
            grads = vjp_batch(results, dx=[r.x for r in results])
        return results, grads, stats

    _, _, shared = traffic(problems)        # one object per array, shared by the problems
    got, grads, equal = traffic(rebuilt)
    # equal arrays travel once per worker like shared ones, then by key; only b inline
    assert equal["blobs_sent"] <= 2 * 12
    assert equal["blob_refs"] >= shared["blob_refs"] > 0
    assert equal["bytes_sent"] - shared["bytes_sent"] < rebuilt[0].A.data.nbytes
    seq = sequential(problems, **EXACT)
    assert_same_results(got, seq)
    assert_same_gradients(grads, [r.vjp(dx=r.x) for r in seq])


def test_call_arrays_keys():
    from sparseqp.batch import _CallArrays

    _, problems = mpc_batch(3, horizon=40, nx=10, nu=5)
    a, b = problems[0], problems[1]
    c = sparseqp.Problem(H=a.H, g=a.g, A=a.A, b=a.b, C=a.C, l=a.l.copy(), u=a.u)
    c.l[c.l.size // 2 + 1] += 1.0           # same fingerprint as a.l, other content
    keys = _CallArrays([a, b, c])
    assert keys.key(a.A.indices) is not None                  # patterns: always keyed
    assert keys.key(a.A.data) == keys.key(c.A.data)            # shared object
    assert keys.key(a.b) is None and keys.key(b.b) is None     # differ: inline
    assert keys.key(c.l) is None                               # unique content: inline
    assert keys.key(np.zeros(10_000)) is None                  # not of this call


def test_frames_round_trip():
    import socket as socket_mod

    from sparseqp.batch import _Channel

    left, right = socket_mod.socketpair()
    try:
        a, b = _Channel.__new__(_Channel), _Channel.__new__(_Channel)
        a.conn = b.conn = None
        a.sock, b.sock = left, right
        big = np.arange(300_000, dtype=np.float64)
        obj = {"big": big, "small": np.arange(5), "fortran": np.asfortranarray(np.ones((40, 30))),
               "strided": big[::3], "ints": np.arange(1000, dtype=np.int32), "text": "x" * 100}
        sender = threading.Thread(target=a.send, args=(obj,))
        sender.start()                      # larger than the socket buffer: concurrent read
        frame = b.recv_frame()
        sender.join()
        got = _Channel.loads(frame)
        for k, v in obj.items():
            if isinstance(v, np.ndarray):
                assert np.array_equal(got[k], v) and got[k].dtype == v.dtype
                assert got[k].flags.writeable
            else:
                assert got[k] == v
        assert len(frame[1]) >= 3           # big, fortran, ints went out-of-band
        a.shutdown_message()
        assert not b.recv_frame()[0]
        left.close()
        with pytest.raises(EOFError):
            b.recv_frame()
    finally:
        left.close()
        right.close()


def test_derivatives_stream_in_several_messages(clean_pool):
    _, problems = mpc_batch(16)
    got = solve_batch(problems, executor=clean_pool, **EXACT)
    before = clean_pool.stats()["messages"]
    grads = vjp_batch(got, dx=[r.x for r in got])
    assert clean_pool.stats()["messages"] - before >= 4           # not one per worker
    assert_same_gradients(grads, [r.vjp(dx=r.x) for r in sequential(problems, **EXACT)])
    assert all(g.A.data.flags.writeable and r.x.flags.writeable for g, r in zip(grads, got))


def test_remote_result_pickles_as_plain_result(clean_pool):
    _, problems = mpc_batch(1)
    (r,) = solve_batch(problems, executor=clean_pool)
    plain = pickle.loads(pickle.dumps(r))
    assert type(plain) is sparseqp.Result
    assert np.array_equal(plain.x, r.x) and plain.status == r.status


# ----------------------------------------------------------------------------------------------
# derivatives
# ----------------------------------------------------------------------------------------------
def test_derivatives_equal_sequential(clean_pool):
    mpc, problems = mpc_batch(6)
    seq = sequential(problems, **EXACT)
    got = solve_batch(problems, executor=clean_pool, **EXACT)
    rng = np.random.default_rng(1)
    dx = rng.standard_normal((len(problems), problems[0].n))
    want = [r.vjp(dx=d) for r, d in zip(seq, dx)]
    assert_same_gradients(vjp_batch(got, dx=dx), want)
    assert_same_gradients([r.vjp(dx=d) for r, d in zip(got, dx)], want)
    # forward mode and Jacobians
    db = [rng.standard_normal(p.n_eq) for p in problems]
    for t, r, d in zip(jvp_batch(got, db=db), seq, db):
        assert np.array_equal(t.x, r.jvp(db=d).x)
    J = got[2].jacobian(wrt="b", index=mpc.x0_rows)
    assert np.array_equal(J, seq[2].jacobian(wrt="b", index=mpc.x0_rows))


def test_vjp_batch_mixes_in_process_and_pooled(clean_pool):
    _, problems = mpc_batch(4)
    local = solve_batch(problems[:2], **EXACT)
    pooled = solve_batch(problems[2:], executor=clean_pool, **EXACT)
    grads = vjp_batch(local + pooled, dx=[r.x for r in local + pooled])
    want = [r.vjp(dx=r.x) for r in sequential(problems, **EXACT)]
    assert_same_gradients(grads, want)


def test_handles_released_on_gc_and_close(clean_pool):
    _, problems = mpc_batch(10)
    results = solve_batch(problems, executor=clean_pool)
    assert sum(clean_pool.cache_sizes()) == 10
    results[0].close()
    assert sum(clean_pool.cache_sizes()) == 9
    with pytest.raises(ValueError, match="closed"):
        results[0].vjp(dx=results[0].x)
    del results
    gc.collect()
    assert clean_pool.cache_sizes() == [0, 0]


def test_evicted_states_are_recomputed():
    _, problems = mpc_batch(8)
    seq = sequential(problems, **EXACT)
    with WorkerPool(2, cache_size=2) as small:
        got = solve_batch(problems, executor=small, chunksize=1, **EXACT)
        cached = sum(small.cache_sizes())
        assert cached in (2, 4)           # 2 per worker that took problems
        grads = vjp_batch(got, dx=[r.x for r in got])
        assert small.stats()["resolves_evicted"] == 8 - cached
        assert_same_gradients(grads, [r.vjp(dx=r.x) for r in seq])


def test_state_of_dead_idle_worker_is_recomputed(clean_pool):
    _, problems = mpc_batch(6)
    got = solve_batch(problems, executor=clean_pool, **EXACT)
    victim = got[0].worker_pid
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not pid_gone(victim) and time.monotonic() < deadline:
        time.sleep(0.01)
    lost = sum(r.worker_pid == victim for r in got)
    before = clean_pool.stats()["resolves_lost"]
    grads = vjp_batch(got, dx=[r.x for r in got])
    assert clean_pool.stats()["resolves_lost"] - before == lost
    assert_same_gradients(grads, [r.vjp(dx=r.x) for r in sequential(problems, **EXACT)])
    assert victim not in clean_pool.pids()


# ----------------------------------------------------------------------------------------------
# faults
# ----------------------------------------------------------------------------------------------
def long_batch():
    # 160 problems of 3-15 ms each, ~1 s on two workers: still running when interrupted
    # after 0.2 s (40 of them took 0.22-0.32 s, and the interrupt could come too late)
    _, problems = mpc_batch(160, horizon=120, nx=10, nu=5)
    return problems


def test_worker_killed_mid_batch(clean_pool):
    problems = long_batch()
    victim = clean_pool.pids()[0]
    timer = threading.Timer(0.2, os.kill, (victim, signal.SIGKILL))
    timer.start()
    try:
        with pytest.raises(WorkerError, match=r"died \(killed by signal SIGKILL\) while solving "
                                              r"batch element") as info:
            solve_batch(problems, executor=clean_pool, chunksize=1)
    finally:
        timer.cancel()
    assert info.value.pid == victim and len(info.value.elements) == 1
    assert victim not in clean_pool.pids()
    gc.collect()
    assert clean_pool.cache_sizes() == [0, 0]       # finished elements were released
    small = problems[:4]
    assert_same_results(solve_batch(small, executor=clean_pool, **EXACT),
                        sequential(small, **EXACT))


@pytest.mark.parametrize("crash, reason", [((os._exit, 3), "exited with code 3"),
                                           ((os.abort,), "killed by signal SIGABRT")])
def test_worker_crash_is_reported_and_replaced(clean_pool, crash, reason):
    with pytest.raises(WorkerError, match=reason):
        clean_pool.broadcast(*crash)
    assert clean_pool.pids() == [None, None]
    _, problems = mpc_batch(2)
    assert_same_results(solve_batch(problems, executor=clean_pool, **EXACT),
                        sequential(problems, **EXACT))


def test_keyboard_interrupt_kills_busy_workers(clean_pool):
    problems = long_batch()
    busy = clean_pool.pids()

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        with pytest.raises(KeyboardInterrupt):
            solve_batch(problems, executor=clean_pool)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    # The workers with a request in flight are killed and reaped. A worker that had just
    # answered and was idle at the interrupt is kept (its cached states stay valid), so
    # which ones go depends on timing; what must hold is that none is orphaned.
    killed = [pid for pid in busy if pid_gone(pid)]
    assert killed
    kept = [pid for pid in clean_pool.pids() if pid is not None]
    assert all(pid in killed or pid in kept for pid in busy)
    assert not any(pid in killed for pid in kept)
    gc.collect()
    assert clean_pool.cache_sizes() == [0, 0]
    assert_same_results(solve_batch(problems[:2], executor=clean_pool, **EXACT),
                        sequential(problems[:2], **EXACT))


def test_interrupt_while_a_reply_is_read_leaves_no_unowned_state(clean_pool, monkeypatch):
    # Ctrl-C between the first and the second task of one reply: the worker holds four
    # states and only the first has an owner yet. That worker must go with its states
    # (before the fix it looked idle and was kept with three states nobody could release).
    _, problems = mpc_batch(8)
    calls = []
    done = batch_module._SolveTask.done

    def interrupted_done(self, replies, slot, pool):
        calls.append(slot.index)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return done(self, replies, slot, pool)

    monkeypatch.setattr(batch_module._SolveTask, "done", interrupted_done)
    with pytest.raises(KeyboardInterrupt):
        solve_batch(problems, executor=clean_pool, chunksize=4)
    monkeypatch.undo()
    gc.collect()
    assert clean_pool.cache_sizes() == [0, 0]
    assert_same_results(solve_batch(problems[:2], executor=clean_pool, **EXACT),
                        sequential(problems[:2], **EXACT))


def test_timeout(clean_pool):
    with pytest.raises(WorkerTimeout, match="within the timeout"):
        solve_batch(long_batch(), executor=clean_pool, timeout=0.1)
    _, problems = mpc_batch(2)
    assert len(solve_batch(problems, executor=clean_pool)) == 2


def test_element_error_names_element(clean_pool):
    _, problems = mpc_batch(4)
    bad = problems[:2] + [nonconvex_qp(10, seed=0)] + problems[2:]
    with pytest.raises(ValueError, match="positive semidefinite") as info:
        solve_batch(bad, executor=clean_pool)
    assert any("batch element 2" in note for note in getattr(info.value, "__notes__", []))
    gc.collect()
    assert clean_pool.cache_sizes() == [0, 0]


def test_input_errors():
    with pytest.raises(ValueError, match="unknown setting"):
        solve_batch([random_qp(5, seed=0)], n_jobs=2, not_a_setting=1)
    with pytest.raises(TypeError, match="expected a Problem"):
        solve_batch([random_qp(5, seed=0), "nope"])
    with pytest.raises(ValueError, match="n_jobs"):
        solve_batch([random_qp(5, seed=0)], n_jobs=0)
    with pytest.raises(ValueError, match="entries"):
        vjp_batch(solve_batch([random_qp(5, seed=0)]), dx=[None, None])


# ----------------------------------------------------------------------------------------------
# executors and progress
# ----------------------------------------------------------------------------------------------
def test_generic_executor():
    _, problems = mpc_batch(3)
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        got = solve_batch(problems, executor=ex, **EXACT)
        assert all(isinstance(r, DetachedResult) for r in got)
        seq = sequential(problems, **EXACT)
        assert_same_results(got, seq)
        assert_same_gradients(vjp_batch(got, dx=[r.x for r in got]),
                              [r.vjp(dx=r.x) for r in seq])


def test_progress_fallback_counter(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    solve_batch([random_qp(5, seed=s) for s in range(3)], progress=True)
    assert "solve_batch: 3/3" in capsys.readouterr().err


def test_ray_backend():
    ray = pytest.importorskip("ray")
    from sparseqp.ray_backend import RayPool

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        _, problems = mpc_batch(6)
        pool = RayPool(2)
        got = solve_batch(problems, executor=pool, **EXACT)
        seq = sequential(problems, **EXACT)
        assert_same_results(got, seq)
        grads = vjp_batch(got, dx=[r.x for r in got])
        assert_same_gradients(grads, [r.vjp(dx=r.x) for r in seq])
        assert got[0].x.flags.writeable and grads[0].A.data.flags.writeable
        del got
        gc.collect()
        assert pool.cache_sizes() == [0, 0]
        pool.close()
    finally:
        ray.shutdown()
