"""Predict many scenes in worker processes, with one progress count over all of them.

The parent locks every output and names its temporaries; a worker writes a scene into the
temporaries it is given and returns; the parent checks them and renames them into place.
Workers die with the parent (:mod:`processes`), so a killed command leaves no worker behind
that could still put a file in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from multiprocessing import get_context
from pathlib import Path

from ..bundle import find_bundle
from ..device import pick_device
from ..geo.processes import check_parent, worker_pool
from ..geo.sources import Source
from .engine import load_predictor, predict_scene
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

    torch.set_num_threads(threads)
    device = pick_device(options.device)
    _worker.update(
        predictor=load_predictor(bundle, options, device),
        messages=messages,
        parent=os.getppid(),
    )


def _predict_one(index: int, scene: Source, outputs: Outputs, options) -> Path:
    """Write one scene into the temporaries ``outputs`` (the parent renames them)."""

    def report(done, total, **fields):
        _worker["messages"].put((index, done))
        check_parent(_worker["parent"])

    return predict_scene(
        _worker["predictor"], scene, outputs, options, progress=report, staged=False
    )


def predict_in_processes(
    bundle: str | os.PathLike,
    plan: Sequence[tuple[Source, Outputs]],
    pixels: Sequence[int],
    options,
    overwrite: bool,
    tally: Tally,
    workers: int,
) -> list[Path]:
    """Each of ``workers`` processes loads the bundle once and predicts whole scenes; each
    scene's outputs are put in place as soon as its worker is done."""
    context = get_context("spawn")
    messages = context.Queue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    classes = _classes(bundle)
    with contextlib.ExitStack() as outer:
        staging = {}  # future → (scene's stack of staged outputs, final class-map path)
        # Temporaries are removed after the workers are dead (stacks unwind last in, first
        # out): a worker still running could otherwise create a temporary just removed.
        staged = outer.enter_context(contextlib.ExitStack())
        pool = outer.enter_context(
            worker_pool(workers, _init, (str(bundle), options, threads, messages))
        )
        for i, (scene, outputs) in enumerate(plan):
            stack = staged.enter_context(contextlib.ExitStack())
            tmp = stack.enter_context(outputs.staged(classes, pixels[i], overwrite))
            future = pool.submit(_predict_one, i, scene, tmp, options)
            staging[future] = (stack, outputs.classes)
        pending: set[Future] = set(staging)
        while pending:
            with contextlib.suppress(queue.Empty):
                while True:
                    tally.update(*messages.get(timeout=0.1))
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # re-raises a worker's error here
                staging[future][0].close()  # check and rename this scene's outputs
        return [path for _, path in staging.values()]


def _classes(bundle) -> list[dict]:
    if str(bundle).lower().endswith(".onnx"):
        from .onnx import load_onnx

        return list(load_onnx(bundle)[1].classes)
    return json.loads(find_bundle(bundle).read_text())["classes"]
