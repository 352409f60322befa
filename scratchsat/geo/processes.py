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
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from ..errors import WorkerError

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
state = {"killed_workers": False}  # see stop()


def init_worker(parent: int) -> None:
    """Run first in every worker: die with ``parent``, leave signals to it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    check_parent(parent)


def check_parent(parent: int) -> None:
    """Exit at once, writing nothing more, if ``parent`` is gone (re-parented to init)."""
    if os.getppid() != parent:
        os._exit(1)


@contextlib.contextmanager
def worker_pool(
    workers: int, initializer=None, initargs: tuple = ()
) -> Iterator[ProcessPoolExecutor]:
    """A spawned process pool whose workers die with this process. On any exception
    (Ctrl-C, SIGTERM, an error) queued work is cancelled and the workers are killed instead
    of waited for; a worker that died becomes a :class:`WorkerError`."""
    pool = ProcessPoolExecutor(
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
    leave with ``os._exit`` once everything of ours is cleaned up."""
    state["killed_workers"] = True
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.kill()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=10)
