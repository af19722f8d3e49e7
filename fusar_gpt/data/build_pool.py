"""Build images in a pool of spawned processes, each with its own :class:`Worker`, stopping at the first failure.

Why a module of its own: what crosses into a spawned process must be importable by name (the initializer and
the job function below), and a pool's failure modes (a worker's exception, a killed worker, a pool that breaks
while it starts) each need their own handling to end as one line instead of a hang or a traceback.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from ..text import one_line
from .build_plan import BuildConfig, Job
from .build_worker import Worker

_WORKER: Worker | None = None


def _init_worker(cfg: BuildConfig) -> None:
    global _WORKER
    _WORKER = Worker(cfg)


def _run_job(job: Job) -> dict:
    return _WORKER(job)


class WorkerDied(ValueError):
    """A build process ended without a result (killed, out of memory): a one-line error like any bad input."""


def run_pool(cfg: BuildConfig, todo: list, bar) -> None:
    """Build ``todo`` in ``cfg.workers`` spawned processes (no GDAL or torch state crosses into them). Why not
    ``multiprocessing.Pool``: it respawns a worker whose initializer fails, forever; an executor instead marks
    itself broken. The first failure, a worker's error (:class:`BuildFailed`, one line) or a dead worker, cancels
    what has not started and ends the build; the images already running finish, and finished parts stay on disk
    for the next run. Of the errors seen, the one of the earliest image in plan order is raised: jobs start in
    that order, so it is the error ``--workers 1`` stops at, and the message does not depend on the pool."""

    def died(err):
        return WorkerDied(f"a build worker died ({one_line(err) or type(err).__name__}); finished "
                          f"images are kept, re-run to continue")

    pool = ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(cfg,))
    failed: dict[int, BaseException] = {}
    try:
        try:
            index = {pool.submit(_run_job, j): k for k, j in enumerate(todo)}
        except (BrokenProcessPool, OSError) as err:  # a worker killed while the pool starts: its pipes close
            raise died(err) from None
        pending = set(index)
        while pending and not failed:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for f in done:
                if f.exception() is None:
                    bar.update()
                else:
                    failed[index[f]] = f.exception()
        if failed:
            for f in pending:
                f.cancel()
            for f in wait(pending).done:  # the images already running finish (their parts are kept)
                if not f.cancelled() and f.exception() is not None:
                    failed[index[f]] = f.exception()
            err = failed[min(failed)]
            if isinstance(err, BrokenProcessPool):
                raise died(err) from None
            raise err
    finally:
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        except OSError:  # the pipes of a dead worker; the error that matters is already on its way
            pass
