"""Dask clusters for ``--dask``: a running ``dask.distributed`` scheduler, or a LocalCluster
of N worker processes started for one command (``local:N``).

Tasks go to the cluster as plain functions of this package with their arguments (paths,
options); a worker that dies takes its task with it and the scheduler gives the task to
another worker (Dask's own retries: ``distributed.scheduler.allowed-failures``, 3 by
default). Workers only return data or write temporaries that the command named; the command
alone puts outputs in place (see :mod:`.outputs`), so a dead worker leaves nothing that looks
finished. Scenes, runs and outputs must be at paths every worker reads and writes (one
machine, or a shared filesystem), or URLs.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from ..errors import InputError, ScratchsatError, WorkerError

if TYPE_CHECKING:
    from distributed import Client, Future

LOCAL = re.compile(r"^local:(\d+)$")
INSTALL = "pip install 'scratchsat[xarray]'"


def check_address(address: str, workers: int = 1, what: str = "scenes") -> None:
    """Refuse a ``--dask`` value that is neither ``local:N`` (N ≥ 1) nor a scheduler address,
    and ``--workers`` beside it (both would deal the ``what`` out)."""
    if workers > 1:
        raise InputError(
            f"--workers {workers} and --dask {address} both deal {what} out; pass one of them "
            "(a Dask cluster's workers are its own: local:N for N processes here)"
        )
    match = LOCAL.match(address)
    if address.startswith("local") and (match is None or int(match.group(1)) < 1):
        raise InputError(
            f"--dask {address}: a local cluster is local:N with N ≥ 1 worker processes "
            "(local:2), or pass a scheduler's address (tcp://host:8786)"
        )
    if not address.strip():
        raise InputError("--dask needs a scheduler's address (tcp://host:8786) or local:N")


@contextlib.contextmanager
def dask_client(address: str, timeout: float = 10) -> Iterator[Client]:
    """A client of the scheduler at ``address``, or of a LocalCluster of N single-threaded
    worker processes for ``local:N`` (closed with the block)."""
    check_address(address)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError(
            f"--dask needs dask.distributed, which is not installed: {INSTALL}"
        ) from None
    match = LOCAL.match(address)
    if match:
        with warnings.catch_warnings():  # another cluster's web server on its port: no matter
            warnings.filterwarnings("ignore", "Port .* is already in use")
            cluster = LocalCluster(
                n_workers=int(match.group(1)),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        with cluster, Client(cluster) as client:
            yield client
        return
    try:
        _probe(address, timeout)
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(
            f"--dask {address}: no Dask scheduler answered there ({exc}); start one "
            "(`dask scheduler`, then `dask worker ADDRESS` on each machine) and pass its "
            "address, or pass local:N for N worker processes on this machine"
        ) from None
    with client:
        yield client


def _probe(address: str, timeout: float) -> None:
    """Fail at once where nothing listens at a TCP ``address`` (the client would retry until
    its timeout); other schemes (tls://, ws://) are left to the client."""
    plain = address.removeprefix("tcp://")
    if "://" in plain or ":" not in plain:
        return
    host, port = plain.rsplit(":", 1)
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
        pass


def task_error(future: Future, what: str) -> Exception | None:
    """The error of a finished ``future`` as one of ours (a worker's own ScratchsatError as
    it is), or None where it succeeded."""
    if future.status != "error":
        return None
    exc = future.exception()
    if isinstance(exc, ScratchsatError):
        return exc
    kind = type(exc).__name__
    if kind == "KilledWorker":
        return WorkerError(
            f"{what}: the Dask workers running it died again and again ({exc}); check the "
            "workers' memory and logs, or give them more memory"
        )
    return WorkerError(f"{what} failed on a Dask worker: {kind}: {exc}")


def in_order(
    client: Client, fn: Callable, tasks: Iterable[tuple], ahead: int | None = None
) -> Iterator:
    """``fn(*task)`` of every task on the cluster, yielded in task order, with at most
    ``ahead`` tasks (default: two per worker thread) submitted and not yet yielded, so that
    results wait in memory only that long."""
    ahead = ahead or max(2, 2 * sum(client.nthreads().values()))
    pending: list = []
    try:
        for task in tasks:
            pending.append(client.submit(fn, *task, pure=False))
            if len(pending) >= ahead:
                yield _result(pending.pop(0), fn)
        while pending:
            yield _result(pending.pop(0), fn)
    finally:
        if pending:  # left early (an error, Ctrl-C): what was queued is not wanted
            client.cancel(pending)


def _result(future: Future, fn: Callable):
    from distributed import wait

    wait(future)
    error = task_error(future, f"a task of {fn.__name__}")
    if error is not None:
        raise error
    result = future.result()
    future.release()
    return result
