"""``predict --dask``: scenes dealt as Dask tasks to a cluster's workers.

This process locks every output and names its temporaries (as for ``--workers``, see
:mod:`.pool`); a task loads the model once per worker (:func:`.blocks.cached_predictor`),
writes one scene into the temporaries it was given and returns; this process checks them and
renames them into place as each scene finishes. A worker that dies (killed, out of memory)
takes its task with it and the scheduler hands the scene to another worker, which writes the
same temporaries afresh. A scene that fails for good (its own error, or workers dying more
often than ``distributed.scheduler.allowed-failures`` allows) leaves no output and no
temporary; the others are still written, and the command then fails naming it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import WorkerError
from ..geo.cluster import dask_client, task_error
from ..geo.sources import Source
from .blocks import cached_predictor
from .engine import predict_scene
from .pool import Tally, _classes
from .writers import Outputs


@dataclass
class SceneDone:
    """What became of one scene of a ``--dask`` run (the summary's row)."""

    scene: str
    out: str
    worker: str  # host:PID of the worker that wrote it ("" where it failed)
    seconds: float  # on that worker
    error: str = ""


def share_cores(client) -> None:
    """Give each worker's tasks an equal share of its machine's cores for torch (Dask's
    nanny starts workers with ``OMP_NUM_THREADS=1``, and without it workers of one machine
    would each start a thread per core), now and on workers that start later (a dead
    worker's replacement)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class TorchThreads(WorkerPlugin):
        name = "scratchsat-torch-threads"

        def __init__(self, tasks_per_host: dict[str, int]) -> None:
            self.tasks_per_host = tasks_per_host  # worker threads of all workers of a host

        def setup(self, worker) -> None:
            import torch

            host = worker.address.rsplit(":", 1)[0]
            tasks = self.tasks_per_host.get(host, worker.state.nthreads)
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // tasks))  # the worker's cores

    hosts: dict[str, int] = {}
    for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
        host = address.rsplit(":", 1)[0]
        hosts[host] = hosts.get(host, 0) + info.get("nthreads", 1)
    client.register_plugin(TorchThreads(hosts))


def _predict_task(bundle: str, options, scene: Source, outputs: Outputs) -> tuple[str, float]:
    """One scene on a worker: (host:PID, seconds)."""
    begin = time.perf_counter()
    predictor = cached_predictor(bundle, options)
    predict_scene(predictor, scene, outputs, options, staged=False)
    return f"{socket.gethostname()}:{os.getpid()}", time.perf_counter() - begin


def predict_on_cluster(
    bundle: str | os.PathLike,
    plan: Sequence[tuple[Source, Outputs]],
    pixels: Sequence[int],
    options,
    overwrite: bool,
    tally: Tally,
    address: str,
    summary: Callable[[list[SceneDone]], None] | None = None,
) -> list[SceneDone]:
    """Predict every scene of ``plan`` as one Dask task on the cluster at ``address``; each
    scene's outputs are put in place as soon as its task is done. Returns one row per scene
    (and hands them to ``summary``, failed or not); raises a WorkerError naming the scenes
    that failed, after the others are written."""
    from distributed import as_completed

    classes = _classes(bundle)
    model = str(Path(bundle).resolve())
    rows: dict[int, SceneDone] = {}
    with contextlib.ExitStack() as outer:
        # Temporaries go after the client (stacks unwind last in, first out): closing it
        # cancels the tasks and stops a local cluster's workers, which could otherwise
        # create a temporary just removed.
        staged = outer.enter_context(contextlib.ExitStack())
        client = outer.enter_context(dask_client(address))
        share_cores(client)
        futures, run = {}, uuid.uuid4().hex[:8]
        for i, (scene, outputs) in enumerate(plan):
            stack = staged.enter_context(contextlib.ExitStack())
            tmp = stack.enter_context(outputs.staged(classes, pixels[i], overwrite))
            future = client.submit(
                _predict_task, model, options, scene, tmp, key=f"scratchsat-scene-{i}-{run}"
            )
            futures[future] = (i, stack)
        for future in as_completed(futures):
            i, stack = futures[future]
            scene, outputs = plan[i]
            error = task_error(future, str(scene))
            if error is not None:
                stack.__exit__(type(error), error, None)  # its temporaries go
                rows[i] = SceneDone(str(scene), str(outputs.classes), "", 0.0, str(error))
                continue
            worker, seconds = future.result()
            stack.close()  # check and rename this scene's outputs
            rows[i] = SceneDone(str(scene), str(outputs.classes), worker, seconds)
            tally.update(i, pixels[i])
    done = [rows[i] for i in range(len(plan))]
    if summary is not None:
        summary(done)
    failed = [row for row in done if row.error]
    if failed:
        why = "; ".join(f"{row.scene}: {row.error}" for row in failed)
        raise WorkerError(
            f"{len(failed)} of {len(done)} scenes failed on the Dask cluster and were not "
            f"written (the others were): {why}"
        )
    return done
