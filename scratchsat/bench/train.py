"""Training samples/s end to end (real patches, d4 on) against the model alone on random
tensors already on the device (same model, batch and precision), and the classic fp32 loop."""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..device import synchronize
from ..training.loop import train_one_epoch
from ..training.setup import TrainConfig, setup
from ..training.steps import precision, run_step


def model_only(run, steps: int) -> float:
    """Samples/s of forward, backward and optimizer steps on one random batch on the device."""
    b, c, p = run.config.batch_size, run.tiles.in_channels, run.tiles.patch_size
    fmt = torch.channels_last if run.channels_last else torch.contiguous_format
    x = torch.randn(b, c, p, p, device=run.device).contiguous(memory_format=fmt)
    k = run.tiles.num_classes
    shape = (b, p, p) if run.tiles.task == "segmentation" else (b,)
    y = torch.randint(0, k, shape, device=run.device)
    model = run.model.train()
    for step in range(steps + 3):  # 3 warm-up steps
        if step == 3:
            synchronize(run.device)
            start = time.perf_counter()
        run_step(run, model, run.optimizer, x, y)
    synchronize(run.device)
    return steps * b / (time.perf_counter() - start)


def classic_loop(run, steps: int, batch_size: int = 32) -> float:
    """The tutorial loop: fp32, contiguous tensors made on the CPU and copied each step, and
    ``loss.item()`` after every step."""
    model = copy.deepcopy(run.model).to(memory_format=torch.contiguous_format).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    c, p, k = run.tiles.in_channels, run.tiles.patch_size, run.tiles.num_classes
    shape = (batch_size, p, p) if run.tiles.task == "segmentation" else (batch_size,)
    x, y = torch.randn(batch_size, c, p, p), torch.randint(0, k, shape)
    total = 0.0
    for step in range(steps + 3):
        if step == 3:
            start = time.perf_counter()
        inputs, labels = x.to(run.device), y.to(run.device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), labels)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return steps * batch_size / (time.perf_counter() - start)


def bench_train(
    tiles: Path,
    *,
    model: str,
    batch_size: int,
    device: str = "auto",
    epochs: int = 2,
    steps: int = 20,
    workers: int | None = None,
    batch_augment: bool | None = None,
) -> dict:
    """End-to-end samples/s (mean of ``epochs`` after a warm-up epoch) vs model-only vs the
    classic loop, for ``model`` on the tiles' patches."""
    config = TrainConfig.of(
        model=model,
        batch_size=batch_size,
        epochs=epochs + 1,
        aug="d4",  # the loader and model paths its README figures measured, without the
        cutmix=0.0,  # default's crops and pasted squares (host lookups, device slices)
        device=device,
        workers=workers,
        batch_augment=batch_augment,
    )
    with tempfile.TemporaryDirectory() as folder:
        run, _ = setup(tiles, Path(folder) / "run", config, False, False, None)
        rates = []
        for epoch in range(1, epochs + 2):
            stats = train_one_epoch(run, epoch, 0, (0.0, 0), None)
            synchronize(run.device)
            if epoch > 1:
                rates.append(stats["samples_per_s"])
        end_to_end = sum(rates) / len(rates)
        alone = model_only(run, steps)
        classic = classic_loop(run, steps)
    return {
        "model": run.model_config.name,
        "patch": [run.tiles.in_channels, run.tiles.patch_size, run.tiles.patch_size],
        "batch_size": batch_size,
        "precision": precision(run),
        "channels_last": run.channels_last,
        "device": str(run.device),
        "data_path": "per batch on the device" if run.raw else "in workers (albumentations)",
        "end_to_end": end_to_end,
        "model_only": alone,
        "classic_fp32_batch32": classic,
    }
