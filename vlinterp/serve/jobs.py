"""Jobs of the explorer: each computation runs on a worker thread of its own, off the event loop,
reports progress, can be cancelled, and leaves its result in a cache keyed by what it computed.

A job function ``fn(job)`` calls ``job.step(done, total, what)`` between its steps; ``step`` (and
``job.check()``) raise :class:`Cancelled` once the job was cancelled, so a cancel takes effect at
the next step boundary. The model is shared, and hooks are process-wide, so jobs take turns on it
(``model_lock``): a queued job waits, and a cancelled one leaves the queue without running.

>>> jobs = Jobs()
>>> job = jobs.submit("trace", ("trace", image_id, prompt), lambda job: run_trace(job))
>>> jobs.get(job.id).to_json()     # {"id", "kind", "state", "progress": [done, total], "step", "result"|"error"}
>>> jobs.cancel(job.id)
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from ..core.errors import VlinterpError

log = logging.getLogger("vlinterp.serve")

QUEUED, RUNNING, DONE, ERROR, CANCELLED = "queued", "running", "done", "error", "cancelled"
FINISHED = (DONE, ERROR, CANCELLED)


class Cancelled(Exception):
    """Raised inside a job function at a step boundary once the job was cancelled."""


@dataclass
class Job:
    id: str
    kind: str
    key: tuple
    state: str = QUEUED
    done: int = 0
    total: int = 1
    what: str = "queued"
    result: object = None
    error: str | None = None
    cached: bool = False
    started: float = field(default_factory=time.time)
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        """Raise :class:`Cancelled` if the job was cancelled."""
        if self.cancel_event.is_set():
            raise Cancelled()

    def step(self, done: int, total: int | None = None, what: str | None = None) -> None:
        """Record progress (``done`` of ``total`` steps, doing ``what``), then :meth:`check`."""
        self.done = int(done)
        if total is not None:
            self.total = max(1, int(total))
        if what is not None:
            self.what = what
        self.check()

    def to_json(self, with_result: bool = True) -> dict:
        out = {"id": self.id, "kind": self.kind, "state": self.state, "progress": [self.done, self.total], "step": self.what,
               "cached": self.cached, "seconds": round(time.time() - self.started, 2)}
        if self.state == DONE and with_result:
            out["result"] = self.result
        if self.state == ERROR:
            out["error"] = self.error
        return out


class Jobs:
    """Job threads, the model lock they share and the result cache (least recently used first out)."""

    def __init__(self, cache_size: int = 128, keep_jobs: int = 512):
        self.model_lock = threading.Lock()
        self.cache: OrderedDict[tuple, object] = OrderedDict()
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.cache_size, self.keep_jobs = int(cache_size), int(keep_jobs)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    # ------------------------------------------------------------ cache
    def cached(self, key: tuple):
        """The cached result of ``key`` (refreshing its place), or ``None``."""
        with self._lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        return None

    def remember(self, key: tuple, result) -> None:
        with self._lock:
            self.cache[key] = result
            self.cache.move_to_end(key)
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)

    # ------------------------------------------------------------- jobs
    def submit(self, kind: str, key: tuple, fn: Callable[[Job], object]) -> Job:
        """A job computing ``fn(job)`` for ``key``: done at once from the cache, the running job of
        the same key when there is one, else a new job on a thread of its own."""
        with self._lock:
            job = Job(f"j{next(self._ids)}", kind, key)
            if key in self.cache:
                self.cache.move_to_end(key)
                job.result, job.state, job.cached, job.done, job.what = self.cache[key], DONE, True, 1, "cached"
                self._add(job)
                return job
            for other in reversed(self.jobs.values()):
                if other.key == key and other.state in (QUEUED, RUNNING) and not other.cancel_event.is_set():
                    return other
            self._add(job)
        threading.Thread(target=self._run, args=(job, fn), name=f"vlinterp-{kind}-{job.id}", daemon=True).start()
        return job

    def _add(self, job: Job) -> None:
        self.jobs[job.id] = job
        while len(self.jobs) > self.keep_jobs:
            old = next((j for j in self.jobs.values() if j.state in FINISHED), None)
            if old is None:
                break
            del self.jobs[old.id]

    def _run(self, job: Job, fn) -> None:
        try:
            while not self.model_lock.acquire(timeout=0.1):  # wait for the model, leave if cancelled
                job.check()
            try:
                job.check()
                job.state, job.what = RUNNING, "starting"
                result = fn(job)
            finally:
                self.model_lock.release()
            self.remember(job.key, result)
            job.result, job.done, job.what = result, job.total, "done"
            job.state = DONE
        except Cancelled:
            job.state, job.what = CANCELLED, "cancelled"
        except VlinterpError as e:
            job.error, job.state = str(e), ERROR
        except Exception as e:  # noqa: BLE001 - a job's failure is reported, the server keeps serving
            log.error("job %s (%s) failed:\n%s", job.id, job.kind, traceback.format_exc())
            job.error, job.state = f"internal error: {type(e).__name__}: {e}", ERROR

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is not None and job.state not in FINISHED:
            job.cancel_event.set()
            job.what = "cancelling"
        return job

    def cancel_all(self) -> None:
        with self._lock:
            live = [j for j in self.jobs.values() if j.state not in FINISHED]
        for j in live:
            j.cancel_event.set()


__all__ = ["Job", "Jobs", "Cancelled", "QUEUED", "RUNNING", "DONE", "ERROR", "CANCELLED"]
