"""``scratchsat train``: its options are the fields of ``settings.TrainConfig`` and
``settings.ModelSettings`` (see ``options.with_fields``), beside what is not a setting of the
run (where the tiles are, where the run goes, how to follow it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from ..settings import ModelSettings, TrainConfig
from .app import command
from .config import META
from .console import progress_bar, results, say, state, stderr
from .options import Overwrite, fields_of, given_options, out_option, with_fields

# train's own options beside the settings: how it runs, how it is followed
TrainDryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Build everything and time a few steps, train nothing: model, data, estimates.",
    ),
]
Trackers = Annotated[
    list[str] | None,
    typer.Option(
        "--log",
        help="Also follow the run in tensorboard (event files in RUN/tensorboard) or mlflow "
        "(./mlruns, or MLFLOW_TRACKING_URI); repeat for both. Optional extras: pip install "
        "'scratchsat[tensorboard]' / 'scratchsat[mlflow]'.",
    ),
]
Resume = Annotated[
    bool, typer.Option(help="Continue the run in --out from its checkpoint, same settings.")
]


@command
@with_fields(TrainConfig, ModelSettings)
def train(
    ctx: typer.Context,
    tiles: Annotated[
        list[Path],
        typer.Argument(
            help="Tiles folder(s) written by `scratchsat tile`; several (other scenes, days or "
            "machines, `tile --shard`) train one model on their union."
        ),
    ],
    out: Annotated[Path, out_option(help="Run folder to write.")],
    dry_run: TrainDryRun = False,
    log_to: Trackers = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    **settings,  # one option per field of TrainConfig and ModelSettings (see with_fields)
) -> None:
    """Train a network from random weights on a tiles folder (or several).

    Writes into --out: the model bundle (model.safetensors + model.json), last.safetensors,
    checkpoint.pt, metrics.csv, report.json, report.html, curves.png, confusion.png and
    train.toml (these settings: `train --config RUN/train.toml` repeats the run).

    \b
    Example: scratchsat train tiles/brandenburg --out runs/brandenburg --epochs 30
    Several folders: scratchsat train tiles/shard-* --out runs/region
    """
    from ..errors import TrainingInterrupted
    from ..ranks import Ranks  # (the imports are here: `scratchsat --help` needs no torch)
    from ..training.loop import train as run_train
    from .views import interrupted_message, show_train_dry_run, train_summary

    given = [*given_options(ctx), *ctx.meta[META].from_file]
    if settings["time_budget"] and "epochs" in given_options(ctx):
        raise InputError("pass --epochs or --time-budget, not both")
    config = TrainConfig.of(**fields_of(settings, TrainConfig, ModelSettings))
    main = Ranks.from_env().main
    state["quiet"] = state["quiet"] or not main  # under torchrun, rank 0 alone speaks
    try:
        with progress_bar("train") as callback:
            report = run_train(
                tiles,
                out,
                config,
                resume=resume,
                overwrite=overwrite,
                progress=callback,
                log=say,
                explicit=given if resume else None,
                dry_run=dry_run,
                trackers=log_to or (),
                settings_toml=ctx.meta[META].toml,
            )
    except TrainingInterrupted as stop:
        stderr.print(interrupted_message(stop, tiles, out), highlight=False, soft_wrap=True)
        raise typer.Exit(128 + stop.signal_number) from None
    if main and dry_run:
        show_train_dry_run(report, results())
    elif main:
        say(train_summary(report, out))
