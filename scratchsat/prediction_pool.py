"""Predict many scenes in worker processes, with one progress count over all of them."""

from __future__ import annotations

import contextlib
import os
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from .writers import Outputs

_worker: dict = {}  # per worker process: the loaded predictor and the progress queue


class Tally:
    """Sums per-scene progress into one ``progress(done, total, mpx=…)`` over all scenes."""

    def __init__(self, totals: Sequence[int], progress: Callable[..., None] | None) -> None:
        self.done, self.total, self.progress = [0] * len(totals), sum(totals), progress
        self.begin = time.perf_counter()

    def update(self, index: int, done: int) -> None:
        self.done[index] = done
        if self.progress is not None:
            pixels = sum(self.done)
            mpx = pixels / 1e6 / max(time.perf_counter() - self.begin, 1e-9)
            self.progress(pixels, self.total, mpx=mpx)

    def for_scene(self, index: int) -> Callable[..., None]:
        return lambda done, total, **fields: self.update(index, done)


def _init(bundle: str, options, threads: int, messages) -> None:
    import torch

    from .bundle import load_bundle
    from .device import pick_device
    from .prediction import Predictor

    torch.set_num_threads(threads)
    device = pick_device(options.device)
    loaded = load_bundle(bundle, device)
    _worker.update(
        predictor=Predictor(loaded.model, loaded.meta, device, options.amp), messages=messages
    )


def _predict_one(index: int, scene: Path, outputs: Outputs, options, overwrite: bool) -> Path:
    from .prediction import predict_scene

    def report(done, total, **fields):
        _worker["messages"].put((index, done))

    return predict_scene(_worker["predictor"], scene, outputs, options, overwrite, report)


def predict_in_processes(
    bundle: str | os.PathLike,
    plan: Sequence[tuple[Path, Outputs]],
    options,
    overwrite: bool,
    tally: Tally,
    workers: int,
) -> list[Path]:
    """Each of ``workers`` processes loads the bundle once and predicts whole scenes."""
    context = get_context("spawn")
    messages = context.Manager().Queue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_init,
        initargs=(str(bundle), options, threads, messages),
    ) as pool:
        futures = [
            pool.submit(_predict_one, i, scene, outputs, options, overwrite)
            for i, (scene, outputs) in enumerate(plan)
        ]
        while not all(f.done() for f in futures):
            with contextlib.suppress(queue.Empty):
                tally.update(*messages.get(timeout=0.2))
        return [f.result() for f in futures]  # re-raises a worker's error here
