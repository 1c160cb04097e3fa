"""The sticky worker protocol of :mod:`sparseqp.batch` on Ray actors (optional extra).

``pip install "sparseqp[ray]"``. Each worker is a Ray actor holding a
:class:`~sparseqp.batch.WorkerState` (the same solver-state cache as a local worker process);
the parent side is the local pool's, over a different transport: a request is one actor method
call with the pickled request as argument, and the wait is ``ray.wait`` on the pending object
refs, so a dead actor (``RayActorError``) is noticed like a dead process. The batch elements
then spread over every node of the Ray cluster.

Use ``solve_batch(problems, executor="ray")`` (the default Ray pool: one actor per CPU of the
cluster; ``ray.init()`` is called when Ray is not initialized yet) or build a pool:

>>> import ray                                                  # doctest: +SKIP
>>> from sparseqp.ray_backend import RayPool                    # doctest: +SKIP
>>> ray.init(num_cpus=2)                                        # doctest: +SKIP
>>> pool = RayPool(2)                                           # doctest: +SKIP
>>> results = sparseqp.solve_batch(problems, executor=pool)     # doctest: +SKIP

Differences from the local pool: an actor that died while idle is noticed at the next request
sent to it (a local worker is checked before sending), which then fails with
:class:`~sparseqp.batch.WorkerError`; the pool replaces the actor and later calls work.
"""
from __future__ import annotations

import pickle
from collections import deque

import numpy as np

from .batch import WorkerState, _dumps_reply, _out_of_band, _PoolBase, _WorkerDied

__all__ = ["RayPool", "RayWorker"]


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the Ray backend needs ray: pip install 'sparseqp[ray]'") from exc
    return ray


class RayWorker:
    """Body of a Ray actor: a :class:`~sparseqp.batch.WorkerState` behind two methods.

    A reply is the pickle stream of the reply with its large arrays out-of-band, as uint8
    arrays that Ray puts in its object store without pickling them (one copy), instead of one
    in-band pickle (copied by pickle, by Ray, and by the parent's unpickling).
    """

    def __init__(self, cache_size):
        self.state = WorkerState(cache_size)

    def hello(self):
        return pickle.dumps(WorkerState.hello(), protocol=5), []

    def handle(self, payload):
        buffers = []
        stream = _dumps_reply(self.state.handle(pickle.loads(payload)), _out_of_band(buffers))
        return stream, [np.frombuffer(b.raw(), np.uint8) for b in buffers]


class _ActorWorker:
    """Transport to one actor: the pending object refs stand for the requests in flight."""

    def __init__(self, actor_cls, cache_size):
        self.actor = actor_cls.remote(cache_size)
        self.refs = deque([self.actor.hello.remote()])
        self.pid = None

    @staticmethod
    def encode(obj):
        """(packet, bytes): the request pickled in-band (one argument of an actor call)."""
        payload = pickle.dumps(obj, protocol=5)
        return payload, len(payload)

    @staticmethod
    def decode(packet):
        # the object store's arrays are read-only: one copy makes the results writable, as
        # they are in-process
        stream, buffers = packet
        return pickle.loads(stream, buffers=[np.array(b) for b in buffers])

    def send(self, payload):
        self.refs.append(self.actor.handle.remote(payload))

    def recv(self):
        ray = _ray()
        try:
            payload = ray.get(self.refs[0])
        except ray.exceptions.RayActorError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise _WorkerDied(f"Ray actor died: {first}") from None
        self.refs.popleft()
        return payload, len(payload[0]) + sum(b.nbytes for b in payload[1])

    def alive(self):
        return True                      # known only from the next reply

    def kill(self):
        _ray().kill(self.actor, no_restart=True)

    def shutdown(self, timeout, graceful=True):
        self.kill()


class RayPool(_PoolBase):
    """A sticky pool of Ray actors; same interface as :class:`~sparseqp.batch.WorkerPool`.

    Parameters
    ----------
    n_workers : int, optional
        Number of actors (default: the cluster's CPUs divided by ``num_cpus``).
    cache_size, timeout, start_timeout, blob_budget, depth
        As for :class:`~sparseqp.batch.WorkerPool` (``start_timeout`` default 300 s: an actor
        waits for free resources before it starts).
    num_cpus : float
        CPUs reserved per actor (default 1).
    actor_options : dict, optional
        More ``ray.remote`` options for the actors (``resources``, ``scheduling_strategy``...).
    """

    def __init__(self, n_workers=None, *, cache_size=128, timeout=None, start_timeout=300.0,
                 blob_budget=256 << 20, depth=2, num_cpus=1, actor_options=None):
        ray = _ray()
        if not ray.is_initialized():
            ray.init()
        if n_workers is None:
            cpus = ray.cluster_resources().get("CPU", 1)
            n_workers = max(1, int(cpus // num_cpus))
        options = {"num_cpus": num_cpus, "max_restarts": 0}
        options.update(actor_options or {})
        self._actor_cls = ray.remote(**options)(RayWorker)
        super().__init__(n_workers, cache_size=cache_size, timeout=timeout,
                         start_timeout=start_timeout, blob_budget=blob_budget, depth=depth)

    def _new_worker(self, slot):
        return _ActorWorker(self._actor_cls, self.cache_size)

    def _wait(self, slots, timeout):
        ray = _ray()
        refs = {s.worker.refs[0]: s for s in slots}
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        return [refs[r] for r in ready]
