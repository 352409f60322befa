"""Worker processes that never outlive their command and never write a final output.

``tile --workers`` and ``predict --workers`` start spawned worker processes. Each one asks
the kernel to kill it when its parent dies (Linux ``PR_SET_PDEATHSIG``) and checks that the
parent is still the one that started it; Ctrl-C and SIGTERM are left to the parent, which
cancels what has not started and kills the workers on its way out. Workers only return data
or write temporaries the parent named; the parent alone renames outputs into place.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from ..errors import WorkerError

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # the parent's to handle, never a worker's
state = {"killed_workers": False}  # see stop()


def init_worker(parent: int) -> None:
    """Run first in every worker: die with ``parent``, leave signals to it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PARENT_SIGNALS)  # blocked since birth: see Pool
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    check_parent(parent)


def check_parent(parent: int) -> None:
    """Exit at once, writing nothing more, if ``parent`` is gone (re-parented to init)."""
    if os.getppid() != parent:
        os._exit(1)


class Pool(ProcessPoolExecutor):
    """A process pool whose workers are born with Ctrl-C and SIGTERM blocked: a worker is
    started by ``submit`` and spends its first second importing Python and scratchsat, before
    :func:`init_worker` can ignore them, and a Ctrl-C to the process group then would print a
    ``KeyboardInterrupt`` traceback from the worker's imports. A blocked signal waits; the
    worker's initializer ignores it (which discards it) and unblocks. In the parent the
    signals are blocked only while ``submit`` starts processes, then delivered as usual."""

    def submit(self, fn, /, *args, **kwargs):
        with deferred_signals():
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, PARENT_SIGNALS)
            try:
                return super().submit(fn, *args, **kwargs)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Results in order, like :meth:`Executor.map`, except that leaving early does not
        cancel the queued work itself: that is :func:`stop`'s (the pool's shutdown, done in
        its manager thread). A future cancelled from outside can still be in the manager's
        table when it finds killed workers, and Python 3.11 then prints ``InvalidStateError``
        from that thread as it marks the future broken."""
        if chunksize != 1 or timeout is not None:
            raise ValueError("Pool.map takes neither chunksize nor timeout")
        futures = [self.submit(fn, *args) for args in zip(*iterables, strict=True)]

        def results():
            for future in futures:
                yield future.result()

        return results()


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back until the block ends, then delivered as usual. Blocking
    them in this thread is not enough: another thread (GDAL's, torch's) can receive one, and
    Python then runs the handler in the main thread at once, which could stop ``submit``
    between starting a worker and sending it its start-up data (the worker then printed an
    ``EOFError`` traceback)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {
        n: signal.signal(n, lambda number, _: caught.append(number)) for n in PARENT_SIGNALS
    }
    try:
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler)
        for number in caught[:1]:
            signal.raise_signal(number)


@contextlib.contextmanager
def worker_pool(
    workers: int, initializer=None, initargs: tuple = ()
) -> Iterator[ProcessPoolExecutor]:
    """A spawned process pool whose workers die with this process. On any exception
    (Ctrl-C, SIGTERM, an error) queued work is cancelled and the workers are killed instead
    of waited for; a worker that died becomes a :class:`WorkerError`."""
    pool = Pool(
        workers,
        mp_context=get_context("spawn"),
        initializer=_init,
        initargs=(os.getpid(), initializer, initargs),
    )
    try:
        yield pool
    except BrokenProcessPool:
        stop(pool)
        raise WorkerError(
            "a worker process died before finishing (killed by the system, perhaps for lack "
            "of memory); run again with fewer --workers"
        ) from None
    except BaseException:
        stop(pool)
        raise
    pool.shutdown(wait=True)


def _init(parent: int, initializer, initargs: tuple) -> None:
    init_worker(parent)
    if initializer is not None:
        initializer(*initargs)


def stop(pool: ProcessPoolExecutor) -> None:
    """Cancel queued work and kill the workers (they hold nothing that must be kept).

    A worker killed while it sends a result leaves half a message in the pool's result pipe,
    whose write end this process also holds: the pool's manager thread then waits for the rest
    forever, and Python's exit joins that thread. ``state["killed_workers"]`` tells the CLI to
    leave with ``os._exit`` once everything of ours is cleaned up. The manager thread is given
    two seconds first: where it is not stuck, it is closing the pool's queues, and an exit in
    the middle of that left a semaphore unlinked but still registered (a resource-tracker
    warning)."""
    state["killed_workers"] = True
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)  # shutdown forgets it
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.kill()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=10)
    if manager is not None:  # it finds the workers dead and closes the pool's queues, whose
        manager.join(timeout=2)  # semaphores it unlinks: not cut short by os._exit midway


def release_semaphores() -> None:
    """Before leaving with ``os._exit`` (see :func:`stop`): unlink the killed pool's
    semaphores, as Python's exit would, so multiprocessing's resource tracker does not warn
    of leaked semaphores to the user. Only the finalizers that never wait run (priority 0 and
    up: semaphores, queue closing), not the joins of threads a dead pool would hang."""
    from multiprocessing import util

    with contextlib.suppress(Exception):
        util._run_finalizers(0)  # type: ignore[attr-defined]
