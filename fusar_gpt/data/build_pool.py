"""Build images in a few spawned processes, each with its own :class:`Worker`, stopping at the first failure.

Why written by hand instead of ``concurrent.futures.ProcessPoolExecutor``: on Python 3.11 with the spawn start
method the executor starts its processes one by one from ``submit`` while its manager thread may already be
tearing the pool down after a worker died. A process started in that window is neither terminated nor told to
stop, waits forever on the shared job queue (whose lock the killed worker may hold), and is then joined, by the
manager thread or by the interpreter at exit: the build, or the program after it, hangs. It happened in CI
(a worker killed while the second one was starting). ``multiprocessing.Pool`` respawns a worker whose
initializer fails, forever. Here each worker has its own pipe (no lock shared between workers, so a dead one
blocks nobody), a dead worker is seen as the end of its pipe, and every process started is stopped in
``finally``: daemonic, terminated, then killed if it does not go.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import signal
import threading
from collections import deque
from contextlib import contextmanager
from multiprocessing.connection import wait

from ..text import one_line
from .build_plan import BuildConfig, Job
from .build_worker import Worker

_STOP_S = 5.0  # how long a worker told to stop may take before it is terminated, then killed


class WorkerDied(ValueError):
    """A build process ended without a result (killed, out of memory): a one-line error like any bad input."""


def _serve(conn, cfg: BuildConfig) -> None:
    """A worker process: read ``(index, job)`` from ``conn``, answer ``(index, result, error)``, until ``None``.
    The :class:`Worker` is made at the first job so that an error making it is that job's error."""
    worker = None
    try:
        while (msg := conn.recv()) is not None:
            k, job = msg
            try:
                worker = worker or Worker(cfg)
                answer = (k, worker(job), None)
            except Exception as err:  # handed to the parent, which decides what ends the build
                answer = (k, None, err)
            try:
                conn.send(answer)
            except (pickle.PicklingError, TypeError, AttributeError) as err:  # cannot cross processes
                conn.send((k, None, RuntimeError(one_line(answer[2] if answer[2] is not None else err))))
    except (KeyboardInterrupt, EOFError):  # Ctrl-C reaches the whole process group; the parent reports it
        pass


@contextmanager
def _sigint_ignored_by_children():
    """Start processes with SIGINT ignored (a disposition kept across exec, so the spawned interpreter never turns
    Ctrl-C into a traceback of its own, even while it imports): Ctrl-C reaches the whole process group, and only
    the parent should answer it, stopping the workers in ``finally``. Signals can be set from the main thread
    only; elsewhere (a build run in a thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _died(why: str) -> WorkerDied:
    return WorkerDied(f"a build worker died ({why}); finished images are kept, re-run to continue")


def _how_it_ended(proc) -> str:
    """How a worker whose pipe ended went: a signal (what the OOM killer sends) or an exit code."""
    proc.join(_STOP_S)
    code = proc.exitcode
    if code is None:
        return "its pipe closed"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}" if -code in signal.valid_signals() else f"signal {-code}"
    return f"exit code {code}"


def run_pool(cfg: BuildConfig, todo: list[Job], bar) -> None:
    """Build ``todo`` in ``cfg.workers`` spawned processes (no GDAL or torch state crosses into them). Jobs are
    handed out in plan order, one at a time per worker. The first failure, a worker's error (:class:`BuildFailed`,
    one line) or a dead worker, stops the handing out; the images already running finish, and finished parts stay
    on disk for the next run. Of the errors seen, the one of the earliest image in plan order is raised: it is the
    error ``--workers 1`` stops at, so the message does not depend on the pool."""
    ctx = mp.get_context("spawn")
    queue = deque(enumerate(todo))
    procs: dict = {}  # parent end of a worker's pipe -> the worker's process
    running: dict = {}  # parent end of a worker's pipe -> index of the job it holds
    failed: dict[int, BaseException] = {}

    def hand_out(conn) -> None:
        if queue and not failed:
            k, job = queue.popleft()
            running[conn] = k
            try:
                conn.send((k, job))
            except OSError:  # the worker is already gone
                failed[running.pop(conn)] = _died(_how_it_ended(procs[conn]))

    try:
        for _ in range(min(cfg.workers, len(todo))):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, cfg), daemon=True, name="fusar-gpt-build")
            try:
                with _sigint_ignored_by_children():
                    proc.start()
            except OSError as err:  # killed while it was being started: its pipes closed
                failed[queue[0][0]] = _died(f"as it started: {one_line(err)}")
                break
            child.close()  # the worker holds the only write end: its death is the end of this pipe
            procs[parent] = proc
            hand_out(parent)
        while running:
            for conn in wait(list(running)):
                try:
                    k, _, err = conn.recv()
                except (EOFError, OSError):
                    failed[running.pop(conn)] = _died(_how_it_ended(procs[conn]))
                    continue
                except Exception as bad:  # an answer that does not unpickle here (an exception's odd __init__)
                    k, err = running[conn], RuntimeError(one_line(bad))
                del running[conn]
                if err is not None:
                    failed[k] = err
                else:
                    bar.update()
                hand_out(conn)
        if failed:
            raise failed[min(failed)]
    finally:
        _stop(procs)


def _stop(procs: dict) -> None:
    """Tell each worker to stop, then terminate and kill whatever has not: no process outlives the build."""
    for conn in procs:
        try:
            conn.send(None)
        except OSError:
            pass
    for conn, proc in procs.items():
        proc.join(_STOP_S)
        if proc.is_alive():
            proc.terminate()
            proc.join(_STOP_S)
        if proc.is_alive():
            proc.kill()
            proc.join()
        conn.close()
