"""The ``scratchsat`` command line: parses options and calls the library, nothing more.

A :class:`ScratchsatError` becomes ``Error: …`` on stderr and exit code 1; any other exception
is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import signal
import sys
import threading
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ._version import __version__
from .errors import InputError, ScratchsatError, Terminated

app = typer.Typer(
    name="scratchsat",
    help="Train CNNs from scratch on multi-band satellite imagery; predict to GeoTIFF.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
stderr = Console(stderr=True)
F = TypeVar("F", bound=Callable)
state: dict = {"quiet": False, "config": None, "config_keys": []}


def handle_errors(command: F) -> F:
    """Turn a ScratchsatError into ``Error: …`` and exit 1, without a traceback; Ctrl-C into
    exit 130 and SIGTERM into 143 (temporaries are removed on the way out either way)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with terminate_as_interrupt():
                return command(*args, **kwargs)
        except ScratchsatError as exc:
            message = escape(str(exc))  # brackets in a message are text, not rich markup
            stderr.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt as stop:
            number = getattr(stop, "signal_number", signal.SIGINT)
            stderr.print(
                f"Interrupted ({signal.Signals(number).name}); no output was left half-written.",
                highlight=False,
            )
            raise typer.Exit(128 + number) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``timeout``, Slurm, Kubernetes, ``docker stop``) raises :class:`Terminated`,
    so it unwinds like Ctrl-C; only in the main thread, where signal handlers can be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(number, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[..., None] | None]:
    """A rich progress bar on stderr, fed by ``callback(done, total, **fields)``; None when quiet.

    Fields (``epoch``, ``loss``, ``rate``) show beside the bar. The bar appears at the first
    callback, so a command refused up front prints only its error.
    """
    if state["quiet"] or not stderr.is_terminal:  # no bars in logs and pipes
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    bar = Progress(*columns, console=stderr, transient=True)
    task = bar.add_task(description, total=None, status="")

    def callback(done: int, total: int, **fields) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total, status=format_fields(fields))

    try:
        yield callback
    finally:
        if bar.live.is_started:
            bar.stop()


def format_fields(fields: dict) -> str:
    parts = []
    if "epoch" in fields:
        parts.append(f"epoch {fields['epoch']}")
    if "loss" in fields:
        parts.append(f"loss {fields['loss']:.4f}")
    if "rate" in fields:
        parts.append(f"{fields['rate']:,.0f} samples/s")
    if "mpx" in fields:
        parts.append(f"{fields['mpx']:,.1f} Mpx/s")
    return "  ".join(parts)


def given_options(ctx: typer.Context) -> list[str]:
    """The options of this command that were set on the command line (not defaults)."""
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    return [name for name, source in sources.items() if source and source.name != "DEFAULT"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"scratchsat {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars or messages.")
    ] = False,
) -> None:
    """Train CNNs from scratch on multi-band satellite imagery; predict to GeoTIFF."""
    state["quiet"] = quiet


def _split_list(text: str | None) -> tuple[str, ...] | None:
    return tuple(s.strip() for s in text.split(",") if s.strip()) if text else None


def say(message: str) -> None:
    if not state["quiet"]:
        stderr.print(message, highlight=False, soft_wrap=True)


def with_config(command: F) -> F:
    """Give ``command`` ``--config FILE`` (TOML: its options and arguments by name, the command
    line winning) and ``--print-config`` (print the resolved settings in that format and
    stop). Required arguments become optional on the command line, as the file may give them;
    one missing from both is an error."""
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)
    required, kept, contexts = [], [], []
    for p in signature.parameters.values():
        annotation = hints.get(p.name, p.annotation)
        if annotation is typer.Context or "Context" in str(annotation):
            contexts.append(p.name)  # typer fills one Context: the wrapper's, passed on
            continue
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
            p = p.replace(default=None)
        kept.append(p.replace(annotation=annotation))
    added = [
        inspect.Parameter(
            "config_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context
        ),
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Path | None,
                typer.Option(
                    "--config", help="TOML file of this command's options; the command line wins."
                ),
            ],
        ),
        inspect.Parameter(
            "print_config",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[
                bool,
                typer.Option("--print-config", help="Print the resolved settings as TOML; stop."),
            ],
        ),
    ]

    @functools.wraps(command)
    def wrapper(
        *,
        config_context: typer.Context,
        config: Path | None = None,
        print_config: bool = False,
        **kwargs,
    ):
        from .configfile import read_config, to_toml

        ctx = config_context
        kwargs.update(dict.fromkeys(contexts, ctx))
        state["config_keys"] = []
        own = ("config", "print_config", "config_context", "ctx")
        params = {p.name: p for p in ctx.command.params if p.name not in own}
        if config is not None:
            for key, raw in read_config(config).items():
                if key not in params:
                    known = ", ".join(n.replace("_", "-") for n in params)
                    raise InputError(
                        f"--config {config}: {key.replace('_', '-')} is not a setting of "
                        f"`scratchsat {ctx.info_name}`; its settings are: {known}"
                    )
                source = ctx.get_parameter_source(key)
                if source is not None and source.name != "DEFAULT":
                    continue  # given on the command line: it wins
                kwargs[key] = _config_value(ctx, params[key], raw, hints.get(key), config)
                state["config_keys"].append(key)
        missing = [n for n in required if kwargs.get(n) in (None, [], ())]
        if missing:
            names = ", ".join(n.upper() for n in missing)
            raise InputError(
                f"missing {names}: give it on the command line or as "
                f"{missing[0].replace('_', '-')} = … in a --config file"
            )
        shown = {k: v for k, v in kwargs.items() if k not in contexts}
        state["config"] = to_toml(shown, str(ctx.info_name))
        if print_config:
            sys.stdout.write(state["config"])
            return None
        return command(**kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _config_value(ctx, param, raw, hint, config: Path):
    """A config file's value as the option would have it from the command line."""
    wanted = param.multiple or (param.nargs == -1)
    if wanted and not isinstance(raw, list):
        raw = [raw]
    if not wanted and isinstance(raw, list):
        raise InputError(f"--config {config}: {param.name.replace('_', '-')} takes one value")
    try:
        value = param.process_value(ctx, raw)  # the option's own conversion and checks
    except typer.BadParameter as exc:
        raise InputError(
            f"--config {config}: {param.name.replace('_', '-')} = {raw!r}: {exc.message}"
        ) from None
    base = hint
    while typing.get_origin(base) is Annotated:
        base = typing.get_args(base)[0]
    if "Path" in str(base) and value is not None:  # typer hands Path options over as Path
        value = [Path(v) for v in value] if wanted else Path(value)
    elif wanted:
        value = list(value)
    return value


@app.command()
@handle_errors
@with_config
def stack(
    files: Annotated[
        list[str],
        typer.Argument(
            help="Input rasters (paths, URLs or /vsi… paths), one or more bands each, in order."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output GeoTIFF.")],
    resolution: Annotated[
        float | None,
        typer.Option(help="Output pixel size in CRS units (default: the finest input's)."),
    ] = None,
    band_names: Annotated[
        str | None, typer.Option(help="Comma-separated band names (default: from the file names).")
    ] = None,
    resampling: Annotated[
        str,
        typer.Option(
            help="nearest, bilinear (default, for continuous data), cubic, average or mode."
        ),
    ] = "bilinear",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Stack per-band files into one multi-band GeoTIFF on one grid.

    Example: scratchsat stack T33UUU_*_B0[1-8].jp2 --out scene.tif
    """
    from .tiles.stack import stack as run_stack

    with progress_bar("stack") as callback:
        path = run_stack(
            files,
            out,
            resolution=resolution,
            band_names=_split_list(band_names),
            resampling=resampling,
            overwrite=overwrite,
            progress=callback,
        )
    say(f"wrote {path}")


@app.command()
@handle_errors
@with_config
def tile(
    scenes: Annotated[
        list[str],
        typer.Argument(
            help="Scene GeoTIFFs (same bands), or one folder of class folders of chips."
        ),
    ],
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels", "-l", help="Label raster, or vector file (GeoJSON, GeoPackage, Shapefile)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default: tiles/<scene name>)."),
    ] = None,
    label_field: Annotated[
        str | None,
        typer.Option(help="Attribute of vector labels holding the class (text or integer)."),
    ] = None,
    background: Annotated[
        str | None,
        typer.Option(help="Name a class for pixels no polygon covers (default: they are ignored)."),
    ] = None,
    patch_size: Annotated[int, typer.Option(help="Patch side in pixels.")] = 64,
    stride: Annotated[
        int | None,
        typer.Option(
            help="Step between windows in pixels (default: the patch size; smaller overlaps)."
        ),
    ] = None,
    min_valid: Annotated[
        float,
        typer.Option(help="Skip windows with a smaller fraction of valid (not nodata) pixels."),
    ] = 0.5,
    min_labeled: Annotated[
        float,
        typer.Option(
            help="Skip windows with a smaller fraction of labelled pixels (0: at least one)."
        ),
    ] = 0.0,
    bands: Annotated[
        str | None, typer.Option(help="Band subset by name or 1-based number, comma-separated.")
    ] = None,
    task: Annotated[
        str,
        typer.Option(
            help="segmentation (a class per pixel) or classification (a class per patch)."
        ),
    ] = "segmentation",
    val: Annotated[float, typer.Option(help="Fraction of patches for validation.")] = 0.2,
    test: Annotated[float, typer.Option(help="Fraction of patches for testing.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    block_size: Annotated[
        int | None,
        typer.Option(help="Side of a spatial split block in pixels (default: 8 patches)."),
    ] = None,
    chips: Annotated[
        bool, typer.Option(help="Also write each patch as a georeferenced GeoTIFF under chips/.")
    ] = False,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    shard: Annotated[
        str | None,
        typer.Option(
            help="K/N: tile only this machine's share of the scenes (sorted, every N-th from the "
            "K-th) into OUT/shard-K-of-N; under torchrun (RANK, WORLD_SIZE) by default.",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Read everything, write nothing: windows, skips, splits, size."
        ),
    ] = False,
) -> None:
    """Cut scenes and labels into patches with statistics, spatial splits and an index.

    Example: scratchsat tile scene.tif --labels landuse.gpkg --label-field fclass
    --patch-size 32 --out tiles/brandenburg
    A job array of 8: scratchsat tile scenes/*.tif --labels l.gpkg --out tiles/region --shard
    $K/8, then scratchsat train tiles/region/shard-* --out runs/region
    """
    from .tiles.options import Shard
    from .tiles.tiling import TileOptions
    from .tiles.tiling import tile as run_tile

    options = TileOptions(
        patch_size=patch_size,
        stride=stride,
        min_valid=min_valid,
        min_labeled=min_labeled,
        bands=_split_list(bands),
        task=task,
        val=val,
        test=test,
        seed=seed,
        block_size=block_size,
        chips=chips,
        workers=workers,
    )
    with warnings_to_stderr(), progress_bar("tile") as callback:
        folder = run_tile(
            scenes,
            labels,
            out,
            label_field=label_field,
            background=background,
            options=options,
            overwrite=overwrite,
            progress=callback,
            dry_run=dry_run,
            shard=Shard.parse(shard) if shard else None,
        )
    if dry_run:
        from .views import show_tile_dry_run

        show_tile_dry_run(folder, out, Console(soft_wrap=True))
        return
    from .tiles.format import read_dataset_json

    info = read_dataset_json(folder)
    splits = ", ".join(f"{n} {name}" for name, n in info["splits"].items())
    skipped = ", ".join(f"{n} {why}" for why, n in info["skipped"].items() if n) or "none"
    say(f"wrote {info['patches']} patches ({splits}; skipped: {skipped}) to {folder}")


def with_settings(command: F) -> F:
    """Give ``command`` one option per model setting (``settings.ModelSettings``), passed in
    its ``**model_settings``: a setting added there is a ``train`` option at once."""
    from .settings import ModelSettings

    signature = inspect.signature(command)
    types = typing.get_type_hints(ModelSettings)
    hints = typing.get_type_hints(command, include_extras=True)  # this module's strings
    kept = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in signature.parameters.values()
        if p.kind != p.VAR_KEYWORD
    ]
    added = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=f.default,
            annotation=Annotated[types[f.name], typer.Option(help=f.metadata["help"])],
        )
        for f in dataclasses.fields(ModelSettings)
    ]
    command.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
    return command


@app.command()
@handle_errors
@with_config
@with_settings
def train(
    ctx: typer.Context,
    tiles: Annotated[
        list[Path],
        typer.Argument(
            help="Tiles folder(s) written by `scratchsat tile`; several (other scenes, days or "
            "machines, `tile --shard`) train one model on their union."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")],
    model: Annotated[
        str,
        typer.Option(
            help="auto (unet for segmentation, resnet18 for classification), simple, resnet18, "
            "resnet34, resnet50, unet, resnet18-unet, resnet34-unet or resnet50-unet."
        ),
    ] = "auto",
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 30,
    epoch_steps: Annotated[
        int,
        typer.Option(
            help="An epoch is at least this many optimizer steps: a training split of fewer "
            "batches is drawn more than once an epoch, each time in a new order."
        ),
    ] = 16,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Build everything and time a few steps, train nothing: model, data, estimates.",
        ),
    ] = False,
    init_from: Annotated[
        str | None,
        typer.Option(
            help="Start from this run's weights (same model and bands; other classes get a new "
            "last layer) instead of random ones."
        ),
    ] = None,
    time_budget: Annotated[
        str | None,
        typer.Option(
            help="Train for as many epochs as fit in this time on this machine (90s, 3m, "
            "1h30m), measured before training starts; instead of --epochs."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Patches per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-3,
    weight_decay: Annotated[
        float, typer.Option(help="Weight decay (not on biases and norms).")
    ] = 1e-2,
    optimizer: Annotated[str, typer.Option(help="adamw or sgd (Nesterov momentum 0.9).")] = "adamw",
    schedule: Annotated[
        str, typer.Option(help="onecycle, cosine (with warm-up) or none, stepped per batch.")
    ] = "onecycle",
    aug: Annotated[
        str,
        typer.Option(
            help="none; d4 (flips and 90° rotations, exact); d4crop (d4, and half the time a "
            "crop of 50-100% of the patch side mirrored back out; segmentation); geo (d4, small "
            "rotations, per-band jitter and noise)."
        ),
    ] = "d4crop",
    class_weights: Annotated[
        str,
        typer.Option(
            help="Loss weights per class: none, inverse or sqrt-inverse frequency, or "
            "sqrt-median: √(median count / count) for classes rarer than the median, 1 else."
        ),
    ] = "sqrt-median",
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing in [0, 1).")] = 0.0,
    cutmix: Annotated[
        float,
        typer.Option(
            help="Fraction of training patches (segmentation) given a square of another patch "
            "of the batch, its labels with it (CutMix); 0: off."
        ),
    ] = 0.5,
    loss: Annotated[
        str,
        typer.Option(
            help="ce (cross-entropy), ce+dice (plus a soft Dice term that weighs every class "
            "alike, for mean IoU and rare classes) or ce+lovasz (plus the Lovász-softmax "
            "surrogate of 1 − mean IoU)."
        ),
    ] = "ce",
    sampling: Annotated[
        str,
        typer.Option(
            help="uniform, or balanced: patches with classes found in few patches are drawn "
            "more often (repeat factor √(most widespread class's share / the class's share))."
        ),
    ] = "uniform",
    amp: Annotated[
        bool | None,
        typer.Option(
            "--amp/--no-amp",
            help="bf16 autocast (default: on for CUDA and on CPUs with native bf16).",
        ),
    ] = None,
    channels_last: Annotated[
        bool | None,
        typer.Option(
            "--channels-last/--no-channels-last", help="NHWC memory layout (default: on for CUDA)."
        ),
    ] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    workers: Annotated[
        int | None,
        typer.Option(help="DataLoader worker processes (default: 0 on the CPU, up to 8 on a GPU)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of weights, batch order and augmentation.")] = 0,
    batch_augment: Annotated[
        bool | None,
        typer.Option(
            "--batch-augment/--no-batch-augment",
            help="Normalise and apply d4 per batch on the device, not per patch in workers "
            "(default: on for GPUs; aug none, d4 or d4crop only).",
        ),
    ] = None,
    ema: Annotated[
        bool,
        typer.Option(
            "--ema/--no-ema",
            help="Validate and save a moving average of the weights (horizon: a tenth of the "
            "training steps).",
        ),
    ] = True,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate/--no-calibrate",
            help="After training, fit one logit offset per class on the validation split (to "
            "its mean IoU; macro F1 for classification) and add them to the model's output bias.",
        ),
    ] = True,
    patience: Annotated[
        int | None,
        typer.Option(help="Stop after this many epochs without a better validation score."),
    ] = None,
    log_to: Annotated[
        list[str] | None,
        typer.Option(
            "--log",
            help="Also follow the run in tensorboard (event files in RUN/tensorboard) or mlflow "
            "(./mlruns, or MLFLOW_TRACKING_URI); repeat for both. Optional extras: pip install "
            "'scratchsat[tensorboard]' / 'scratchsat[mlflow]'.",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out from its checkpoint, same settings.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier run in --out.")] = False,
    **model_settings,  # one option per field of settings.ModelSettings (see with_settings)
) -> None:
    """Train a network from random weights on a tiles folder (or several).

    Writes into --out: the model bundle (model.safetensors + model.json), last.safetensors,
    checkpoint.pt, metrics.csv, report.json, curves.png and confusion.png.

    Example: scratchsat train tiles/brandenburg --out runs/brandenburg --epochs 30
    Several folders: scratchsat train tiles/shard-* --out runs/region
    """
    from .errors import TrainingInterrupted
    from .training.budget import parse_duration
    from .training.loop import TrainConfig

    if time_budget and "epochs" in given_options(ctx):
        raise InputError("pass --epochs or --time-budget, not both")
    from .training.loop import train as run_train
    from .training.report import LABELS

    config = TrainConfig.of(
        model=model,
        epochs=epochs,
        epoch_steps=epoch_steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        optimizer=optimizer,
        schedule=schedule,
        aug=aug,
        class_weights=class_weights,
        label_smoothing=label_smoothing,
        cutmix=cutmix,
        loss=loss,
        sampling=sampling,
        amp=amp,
        channels_last=channels_last,
        compile=compile,
        device=device,
        workers=workers,
        seed=seed,
        batch_augment=batch_augment,
        patience=patience,
        ema=ema,
        calibrate=calibrate,
        time_budget=parse_duration(time_budget) if time_budget else None,
        init_from=str(Path(init_from).resolve()) if init_from else None,
        **model_settings,
    )
    secondary = int(os.environ.get("RANK", "0")) > 0  # under torchrun, rank 0 alone speaks
    if secondary:
        state["quiet"] = True
    try:
        with warnings_to_stderr(), progress_bar("train") as callback:
            report = run_train(
                tiles,
                out,
                config,
                resume=resume,
                overwrite=overwrite,
                progress=callback,
                log=say,
                explicit=[*given_options(ctx), *state["config_keys"]] if resume else None,
                dry_run=dry_run,
                trackers=log_to or (),
            )
    except TrainingInterrupted as stop:
        from .views import interrupted_message

        stderr.print(interrupted_message(stop, tiles, out), highlight=False, soft_wrap=True)
        raise typer.Exit(128 + stop.signal_number) from None
    if dry_run:
        from .views import show_train_dry_run

        if not secondary:
            show_train_dry_run(report, Console(soft_wrap=True))
        return
    final = report["test"] or report["val"]
    split = "test" if report["test"] else "validation"
    metric = report["metric"]
    if secondary:
        return
    if state["config"]:  # the resolved settings: `train --config RUN/train.toml` repeats it
        from .geo.outputs import write_text

        write_text(Path(out) / "train.toml", state["config"], overwrite=True)
    say(
        f"best epoch {report['best_epoch']}: {split} accuracy {final['overall_accuracy']:.3f}, "
        f"{LABELS[metric]} {final[metric]:.3f}; model bundle in {out}"
    )


@contextlib.contextmanager
def warnings_to_stderr() -> Iterator[None]:
    """Show the library's warnings as ``Warning: …`` lines (not Python's warning format)."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        stderr.print(f"[yellow]Warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


@app.command()
@handle_errors
@with_config
def predict(
    run: Annotated[
        Path,
        typer.Argument(
            help="Run folder (or its model.json) from `train`, or a .onnx from `export`."
        ),
    ],
    scenes: Annotated[list[str], typer.Argument(help="Scenes to predict (GeoTIFFs).")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Class-map GeoTIFF for one scene, or a folder for several."
        ),
    ],
    probabilities: Annotated[
        Path | None,
        typer.Option(help="Also write per-class probabilities here (a .tif, or a folder)."),
    ] = None,
    float_probabilities: Annotated[
        bool,
        typer.Option(
            "--float",
            help="Probabilities as float32 0–1 (default: uint8 whole percent, GDAL scale 0.01).",
        ),
    ] = False,
    uncertainty: Annotated[
        Path | None,
        typer.Option(
            help="Also write how sure the model is here (a .tif, or a folder): margin between "
            "the two most probable classes, normalised entropy, top probability (float32)."
        ),
    ] = None,
    vector: Annotated[
        Path | None,
        typer.Option(
            help="Also write the map as polygons here (a .gpkg, or a folder), as `vectorize` does."
        ),
    ] = None,
    stac: Annotated[
        bool,
        typer.Option(
            "--stac",
            help="Also write a STAC Item (PRED.stac.json) beside each class map: grid, classes, "
            "the model's band contract and provenance.",
        ),
    ] = False,
    overlap: Annotated[
        float, typer.Option(help="Fraction of a window shared with its neighbour.")
    ] = 0.5,
    patch_size: Annotated[
        int | None, typer.Option(help="Window side in pixels (default: the training patch size).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    amp: Annotated[
        bool | None, typer.Option("--amp/--no-amp", help="bf16 autocast (default: on for CUDA).")
    ] = None,
    cog: Annotated[
        bool, typer.Option("--cog", help="Write Cloud-Optimized GeoTIFFs with overviews.")
    ] = False,
    workers: Annotated[
        int, typer.Option(help="Processes predicting scenes in parallel (several scenes).")
    ] = 1,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta", help="Average each window over its 8 flips and quarter turns (8× slower)."
        ),
    ] = False,
    ensemble: Annotated[
        list[str] | None,
        typer.Option(
            help="Another run whose probabilities are averaged in (same bands and classes); "
            "repeat for more."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Check scenes and outputs, predict nothing: bands, windows, sizes."
        ),
    ] = False,
) -> None:
    """Predict scenes to class-map GeoTIFFs on their exact grids, with a legend.

    Example: scratchsat predict runs/brandenburg brandenburg.tif --out brandenburg_classes.tif
    """
    from .prediction import PredictOptions
    from .prediction import predict as run_predict

    options = PredictOptions(
        patch_size=patch_size,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        amp=amp,
        cog=cog,
        float_probabilities=float_probabilities,
        tta=tta,
        ensemble=tuple(ensemble or ()),
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun, rank 0 alone speaks
        state["quiet"] = True
    with warnings_to_stderr(), progress_bar("predict") as callback:
        paths = run_predict(
            run,
            scenes,
            out,
            probabilities=probabilities,
            uncertainty=uncertainty,
            vector=vector,
            stac=stac,
            options=options,
            overwrite=overwrite,
            progress=callback,
            workers=workers,
            dry_run=dry_run,
        )
    if dry_run:
        from .views import show_predict_dry_run

        show_predict_dry_run(paths, Console(soft_wrap=True))  # type: ignore[arg-type]
        return
    for path in paths:
        say(f"wrote {path}")
    if world > 1:
        say(f"{len(paths)} scenes predicted by {world} processes")


@app.command()
@handle_errors
@with_config
def vectorize(
    classmap: Annotated[str, typer.Argument(help="Class map written by `scratchsat predict`.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Vector file: .gpkg (default format), .geojson, .fgb, .shp."
        ),
    ],
    uncertainty: Annotated[
        str | None,
        typer.Option(
            help="The map's --uncertainty raster: adds each polygon's mean top probability."
        ),
    ] = None,
    min_area: Annotated[
        float,
        typer.Option(
            help="Regions smaller than this (CRS units², m² for UTM) join their largest neighbour."
        ),
    ] = 0.0,
    drop_small: Annotated[
        bool, typer.Option("--drop-small", help="Leave regions under --min-area out instead.")
    ] = False,
    simplify: Annotated[
        float,
        typer.Option(help="Simplify each polygon to this tolerance (CRS units), keeping it valid."),
    ] = 0.0,
    classes: Annotated[
        list[str] | None,
        typer.Option("--classes", help="Only this class (name or code); repeat for more."),
    ] = None,
    driver: Annotated[
        str | None, typer.Option(help="OGR driver, when the suffix does not tell (e.g. GPKG).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
) -> None:
    """Class map to polygons: one feature per connected region of a class, with its class,
    area and (given the uncertainty raster) mean top probability; styled for QGIS.

    Example: scratchsat vectorize brandenburg_classes.tif --out classes.gpkg --min-area 5000
    """
    from .geo.vectorize import vectorize as run_vectorize

    report = run_vectorize(
        classmap,
        out,
        uncertainty=uncertainty,
        min_area=min_area,
        drop_small=drop_small,
        simplify=simplify,
        keep=classes,
        driver=driver,
        overwrite=overwrite,
    )
    say(f"wrote {report.features} polygons to {report.path}")


@app.command()
@handle_errors
@with_config
def suggest(
    run: Annotated[Path, typer.Argument(help="Run folder (or its model.json) from `train`.")],
    scene: Annotated[str, typer.Argument(help="Scene to look for windows worth labelling.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Footprints: .gpkg (default), .geojson or .fgb.")
    ],
    n: Annotated[int, typer.Option("--n", help="How many windows to suggest.")] = 50,
    tiles: Annotated[
        Path | None,
        typer.Option(help="Tiles folder whose patches are labelled already (default: the run's)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """What to label next: the training-patch-sized windows where the model is least sure,
    spread over the scene, none overlapping a labelled patch; footprints to digitise in QGIS.

    Example: scratchsat suggest runs/brandenburg brandenburg.tif --n 50 --out to_label.gpkg
    """
    from .prediction import PredictOptions
    from .prediction.suggest import suggest as run_suggest

    with warnings_to_stderr(), progress_bar("suggest") as callback:
        found = run_suggest(
            run,
            scene,
            out,
            n=n,
            tiles=tiles,
            options=PredictOptions(device=device),
            overwrite=overwrite,
            progress=callback,
        )
    say(f"wrote {len(found)} windows to label to {out}")


@app.command()
@handle_errors
@with_config
def export(
    run: Annotated[Path, typer.Argument(help="Run folder (or its model.json) from `train`.")],
    onnx: Annotated[Path, typer.Option("--onnx", help="Write the model here as ONNX.")],
    deepness: Annotated[
        bool,
        typer.Option(
            "--deepness",
            help="For the QGIS Deepness plugin: fixed tile size, 8-bit input scaled as it does.",
        ),
    ] = False,
    tile_size: Annotated[
        int | None, typer.Option(help="With --deepness: tile side (default: the patch size).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Export a run's model to ONNX with its band contract, classes and normalisation, for
    onnxruntime, QGIS (Deepness) and other tools; `predict` runs the file too.

    Example: scratchsat export runs/brandenburg --onnx brandenburg.onnx
    """
    from .prediction.onnx import export_onnx

    with warnings_to_stderr():
        path = export_onnx(run, onnx, deepness=deepness, tile_size=tile_size, overwrite=overwrite)
    say(f"wrote {path}")


@app.command()
@handle_errors
@with_config
def evaluate(
    prediction: Annotated[str, typer.Argument(help="Class map written by `scratchsat predict`.")],
    labels: Annotated[
        str,
        typer.Option(
            "--labels", "-l", help="Label raster, or vector file (GeoJSON, GeoPackage, Shapefile)."
        ),
    ],
    label_field: Annotated[
        str | None, typer.Option(help="Attribute of vector labels holding the class.")
    ] = None,
    background: Annotated[
        str | None, typer.Option(help="Class name for pixels no polygon covers (default: ignored).")
    ] = None,
    tiles: Annotated[
        Path | None, typer.Option(help="Tiles folder of the scene, to score one --split only.")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="train, val or test: only the pixels of that split's patches."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the scores to this JSON file.")
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            help="Also write a self-contained page: scores, per-class table, confusion matrix "
            "and area estimates."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing --json/--html files.")] = False,
) -> None:
    """Score a class map against labels: accuracy, per-class IoU/F1/precision/recall, confusion.

    Example: scratchsat evaluate pred.tif --labels landuse.gpkg --label-field fclass
    --tiles tiles/brandenburg --split test --json scores.json --html scores.html
    """
    from .evaluation import evaluate as run_evaluate
    from .geo.outputs import check_output

    for path in (json_out, html):
        if path is not None:
            check_output(path, overwrite)
    with progress_bar("evaluate") as callback:
        result = run_evaluate(
            prediction,
            labels,
            label_field=label_field,
            background=background,
            tiles=tiles,
            split=split,
            progress=callback,
        )
    from .views import show_scores

    show_scores(result, Console(soft_wrap=True))
    if json_out is not None:
        from .geo.outputs import write_json

        write_json(json_out, result, overwrite=overwrite, lock=True)
        say(f"wrote {json_out}")
    if html is not None:
        from .evaluation import evaluation_page
        from .geo.outputs import write_text

        write_text(html, evaluation_page(result), overwrite=overwrite)
        say(f"wrote {html}")


@app.command()
@handle_errors
@with_config
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything.")] = Path(
        "scratchsat-demo"
    ),
    epochs: Annotated[
        int | None, typer.Option(help="Training epochs (default: 12 on the CPU, 40 on a GPU).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier demo in --out.")] = False,
) -> None:
    """Run the whole flow on synthetic scenes: tile, train from scratch, predict, evaluate.

    Leaves both scenes, the tiles, the run folder, the prediction GeoTIFF and pictures in --out.

    Example: scratchsat demo --out scratchsat-demo
    """
    from .extras.demo import demo as run_demo

    result = run_demo(
        out, epochs=epochs, device=device, overwrite=overwrite, bars=progress_bar, log=say
    )
    files = result["files"]
    typer.echo(
        f"Unseen scene: overall accuracy {result['overall_accuracy']:.3f}, mean IoU "
        f"{result['mean_iou']:.3f}\n"
        f"  prediction   {files['prediction']} (open it in QGIS: the legend names the classes)\n"
        f"  pictures     {', '.join(files['pictures'])}\n"
        f"  model bundle {files['run']}\n  tiles        {files['tiles']}\n"
        f"  scenes       {', '.join(files['scenes'])}"
    )


@app.command()
@handle_errors
@with_config
def info(
    path: Annotated[
        list[str],
        typer.Argument(
            help="A raster, a tiles folder or a run folder; several tiles folders: their union "
            "as `train` sees it."
        ),
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
    open_report: Annotated[
        bool,
        typer.Option("--open", help="Open a run's report.html in the web browser as well."),
    ] = False,
) -> None:
    """Describe a raster, a tiles folder (or several together) or a model bundle.

    Example: scratchsat info tiles/brandenburg; scratchsat info runs/brandenburg --open
    """
    import json

    from .extras.info import describe_folders, report_page

    described = describe_folders(path)
    if open_report:
        import webbrowser

        page = report_page(described)
        webbrowser.open(page.resolve().as_uri())
        say(f"opened {page}")
    if json_output:
        typer.echo(json.dumps(described, indent=2))
        return
    from .views import show

    show(described, Console(soft_wrap=True))


@app.command()
@handle_errors
@with_config
def bench(
    quick: Annotated[
        bool, typer.Option(help="Small sizes: under 2 minutes on a 2-core CPU.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write every figure to this JSON file.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --json file.")] = False,
    tile_scene: Annotated[
        str | None,
        typer.Option(
            help="Also measure tile on this GeoTIFF of yours (one constant class as labels)."
        ),
    ] = None,
    only: Annotated[
        str,
        typer.Option(help="Comma-separated steps to measure: tile, load, train, predict."),
    ] = "tile,load,train,predict",
) -> None:
    """Measure tile, load, train and predict throughput, each beside its bound in the same run.

    Example: scratchsat bench --quick --json bench.json
    """
    from .bench import STEPS, run_benchmarks
    from .geo.outputs import check_output

    steps = [step.strip() for step in only.split(",") if step.strip()]
    unknown = [step for step in steps if step not in STEPS]
    if unknown or not steps:
        raise InputError(
            f"--only {only!r}: {'unknown step ' + repr(unknown[0]) if unknown else 'no step'}; "
            f"name one or more of {', '.join(STEPS)}, separated by commas"
        )
    if json_out is not None:
        check_output(json_out, overwrite)
    if tile_scene is not None:  # refuse a file tile would refuse before anything runs
        from .tiles.tiling import describe_scene

        describe_scene(tile_scene, None)
    result = run_benchmarks(quick=quick, device=device, log=say, tile_scene=tile_scene, only=steps)
    from .views import show_bench

    show_bench(result, Console(soft_wrap=True))
    if json_out is not None:
        from .geo.outputs import write_json

        write_json(json_out, result, overwrite=overwrite, lock=True)
        say(f"wrote {json_out}")


def main() -> None:
    """Console-script entry point."""
    from .geo.processes import state as workers

    try:
        app(prog_name="scratchsat")
    except SystemExit as done:
        if workers["killed_workers"]:  # see processes.stop: do not wait for a dead pool
            from .geo.processes import release_semaphores

            release_semaphores()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.code if isinstance(done.code, int) else 1)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
