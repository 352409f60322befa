"""Model bundles (safetensors weights + ``model.json``) and resumable training checkpoints.

A bundle loads without executing anything from the file: weights are safetensors, everything
else is JSON. Checkpoints (which also hold optimizer state) are torch files, written and read
only inside a run folder by ``train --resume``, and read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ._version import __version__
from .errors import BundleError, InputError
from .geo.labels import IGNORE_INDEX
from .geo.outputs import write_atomically, write_json
from .models import ModelConfig, build_model
from .models.inputs import unwrap
from .runfolder import RunFolder
from .tiles.options import MAX_PATCH, TASKS

FORMAT = "scratchsat-model"
FORMAT_VERSION = 1


def state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous weights of ``model`` (unwrapping torch.compile and DDP)."""
    weights = unwrap(model).state_dict()
    return {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    weights = state_dict(model)

    def write(tmp: Path) -> None:
        try:
            save_file(weights, str(tmp), metadata=metadata)
        except SafetensorError as exc:  # an I/O error in Rust's words: "… (os error 28)"
            code = re.search(r"os error (\d+)", str(exc))
            raise OSError(int(code.group(1)) if code else None, str(exc)) from None

    write_atomically(path, write)


def save_bundle(folder: Path, model: nn.Module, meta: BundleMeta | dict) -> None:
    """Write ``model.safetensors`` then ``model.json`` (which names it) into ``folder``. The
    weights' own metadata records the decision offsets their output bias holds, if any."""
    record = meta.to_dict() if isinstance(meta, BundleMeta) else meta
    metadata = {"format": FORMAT}
    if record.get("decision_offsets") is not None:
        metadata["decision_offsets"] = json.dumps(list(record["decision_offsets"]))
    files = RunFolder(folder)
    save_weights(model, files.weights, metadata)
    write_json(
        files.model_json,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **record,
            # the version that trained it: kept when saved again, never None (it was null)
            "scratchsat_version": record.get("scratchsat_version") or __version__,
            "weights": RunFolder.WEIGHTS,
        },
    )


def weights_offsets(path: Path) -> list[float] | None:
    """The decision offsets a weights file's output bias holds (its metadata), or None."""
    with safe_open(str(path), framework="pt") as weights:
        text = (weights.metadata() or {}).get("decision_offsets")
    return None if text is None else [float(v) for v in json.loads(text)]


@dataclass(frozen=True)
class BundleMeta:
    """``model.json`` as a typed record: what a bundle promises (architecture, band contract,
    classes) and how it was made. Reads older files and partial descriptions (a hand-made
    model for tests or benchmarks) too: what is missing is None."""

    task: str
    patch_size: int
    bands: tuple[dict, ...]  # name, mean, std (p2, p98), as dataset.json has them
    classes: tuple[dict, ...]  # id, code, name, colour: the class table GIS outputs carry
    dtype: str
    band_names: str | None = None  # "descriptions" (match by name) or "numbers" (by order)
    nodata: float | None = None
    nodata_is_nan: bool = False
    ignore_index: int = 255  # the label of pixels the loss ignored
    model: dict | None = None  # ModelConfig.to_dict()
    training: dict | None = None  # TrainConfig as saved
    data: dict | None = None  # tiles folder and its hash
    epoch: int | None = None
    metrics: dict | None = None
    scratchsat_version: str | None = None
    # per class, in class order: already added to the output layer's bias (training/offsets.py)
    decision_offsets: tuple[float, ...] | None = None

    @property
    def band_list(self) -> list[str]:
        """The trained bands' names, in the model's order."""
        return [b["name"] for b in self.bands]

    @classmethod
    def from_dict(cls, data: dict | BundleMeta) -> BundleMeta:
        if isinstance(data, BundleMeta):
            return data
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["bands"] = tuple(values.get("bands", ()))
        values["classes"] = tuple(values.get("classes", ()))
        offsets = values.get("decision_offsets")
        if offsets is not None:
            if len(offsets) != len(values["classes"]):
                raise TypeError(
                    f"decision_offsets holds {len(offsets)} values for "
                    f"{len(values['classes'])} classes"
                )
            values["decision_offsets"] = tuple(offsets)
        return cls(**values)

    def to_dict(self) -> dict:
        return {**asdict(self), "bands": list(self.bands), "classes": list(self.classes)}

    @classmethod
    def of_run(
        cls,
        *,
        model: dict,
        tiles: dict,
        classes: list[dict],
        training: dict,
        data: dict,
        epoch: int,
        metrics: dict,
    ) -> BundleMeta:
        """A training run's ``model.json``: the architecture (``ModelConfig.to_dict()``),
        the band contract and classes of its tiles (``tiles``: their ``dataset.json``), its
        settings (``training``: ``asdict`` of the config), its data and the saved epoch."""
        return cls.from_dict(
            {
                "model": model,
                "task": tiles["task"],
                "patch_size": tiles["patch_size"],
                "bands": tiles["bands"],
                "band_names": tiles.get("band_names"),
                "dtype": tiles["dtype"],
                "nodata": tiles["nodata"],
                "nodata_is_nan": tiles.get("nodata_is_nan", False),
                "ignore_index": IGNORE_INDEX,
                "classes": [{k: c[k] for k in ("id", "code", "name", "colour")} for c in classes],
                "training": training,
                "data": data,
                "epoch": epoch,
                "metrics": metrics,
            }
        )


def read_meta(record: object, where: str | os.PathLike, fix: str) -> BundleMeta:
    """``model.json``, or the scratchsat metadata of an ONNX file, as a checked
    :class:`BundleMeta`: the keys prediction relies on, with their types and sane sizes, so a
    hand-edited or foreign file is a :class:`BundleError` that says what is wrong (and
    ``fix``) before anything is built or allocated."""

    def refuse(what: str) -> BundleError:
        return BundleError(f"{where}: {what}; {fix}")

    if not isinstance(record, dict):
        raise refuse(f"expected a JSON object of the model's settings, found {_kind(record)}")
    for key, kind in (("task", str), ("patch_size", int), ("dtype", str)):
        value = record.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            found = "it missing" if key not in record else _kind(value)
            raise refuse(f"{key!r} must be a {kind.__name__}, found {found}")
    if record["task"] not in TASKS:
        raise refuse(f"task {record['task']!r} is not one of {', '.join(TASKS)}")
    if not 1 <= record["patch_size"] <= MAX_PATCH:
        raise refuse(f"patch_size {record['patch_size']} px is outside 1 to {MAX_PATCH} px")
    entries: dict[str, dict[str, type]] = {
        "bands": {"name": str, "mean": float, "std": float},
        "classes": {"code": int},
    }
    for key, wanted in entries.items():
        items = record.get(key)
        if not isinstance(items, list) or not items:
            found = "it missing" if key not in record else _kind(items)
            raise refuse(f"{key!r} must be a non-empty list, found {found}")
        for item in items:
            if not isinstance(item, dict) or not all(
                _is(item.get(name), kind) for name, kind in wanted.items()
            ):
                needs = ", ".join(f"{n} ({k.__name__})" for n, k in wanted.items())
                raise refuse(f"every entry of {key!r} needs {needs}; found {item!r:.80}")
    if not all(math.isfinite(b["mean"]) and 0 <= b["std"] < math.inf for b in record["bands"]):
        raise refuse("band means must be finite numbers and deviations finite, not negative")
    try:
        return BundleMeta.from_dict(record)
    except TypeError as exc:
        raise refuse(f"it misses what a bundle must say ({exc})") from None


def _is(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


@dataclass
class Bundle:
    """A loaded model with its ``model.json``."""

    model: nn.Module
    meta: BundleMeta
    path: Path

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.meta.model or {})


def find_bundle(path: str | os.PathLike) -> Path:
    """``model.json`` of a run folder, a ``model.json`` path or a weights file beside one."""
    path = Path(path)
    name = RunFolder.MODEL_JSON
    candidate = path / name if path.is_dir() else path.with_name(name)
    if path.suffix == ".json":
        candidate = path
    if not candidate.exists():
        raise BundleError(
            f"no model bundle at {path}: expected a run folder written by `scratchsat train` "
            "(with model.json and model.safetensors), or the path of its model.json"
        )
    return candidate


def read_model_json(path: str | os.PathLike) -> dict:
    """A bundle's ``model.json`` (of a run folder, or its path), checked as prediction needs
    it (:func:`read_meta`), as a dict: the one reader of that file."""
    meta_path = find_bundle(path)
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise BundleError(f"{meta_path} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{meta_path} is not a scratchsat model.json (no format {FORMAT!r})")
    read_meta(meta, meta_path, FIX)
    return meta


FIX = "train again, or restore the model.json `train` wrote"


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu") -> Bundle:
    """Rebuild the network of a bundle and load its weights (nothing is unpickled)."""
    meta_path = find_bundle(path)
    meta = read_model_json(meta_path)
    name = meta.get("weights", RunFolder.WEIGHTS)
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise BundleError(
            f"{meta_path} names its weights {name!r}, which is not a file beside it; a bundle's "
            "weights must lie in the bundle's own folder (model.json says "
            '"weights": "model.safetensors")'
        )
    weights = meta_path.with_name(name)
    record = read_meta(meta, meta_path, FIX)
    try:
        config = ModelConfig.from_dict(meta["model"])
        model = build_model(config)
        model.load_state_dict(load_file(str(weights), device=str(device)))
    except FileNotFoundError:
        raise BundleError(f"{weights} is missing: the bundle {meta_path} is incomplete") from None
    except (SafetensorError, RuntimeError, KeyError, TypeError, InputError) as exc:
        raise BundleError(f"{weights} does not fit {meta_path}: {exc}") from None
    return Bundle(model.to(device).eval(), record, meta_path)


def save_checkpoint(path: Path, state: dict) -> None:
    write_atomically(path, lambda tmp: torch.save(state, tmp))


CHECKPOINT_KEYS = ("model", "optimizer", "schedule", "config", "data_hash", "epoch", "step")


def load_checkpoint(path: Path) -> dict:
    """A run's own resumable checkpoint; ``weights_only`` refuses anything but tensors and
    plain containers, so even a tampered file cannot run code. A damaged or foreign file is a
    :class:`BundleError`."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for damaged or foreign files
        raise BundleError(
            f"{path} is not a scratchsat checkpoint: it cannot be read as one "
            f"({type(exc).__name__}). "
            "It is damaged (a copy cut short?) or was replaced; start the run again with "
            "--overwrite, or resume from an intact copy of the run folder"
        ) from None
    if not isinstance(state, dict) or any(key not in state for key in CHECKPOINT_KEYS):
        raise BundleError(
            f"{path} is not a scratchsat checkpoint (keys missing); start the run again with "
            "--overwrite, or resume from an intact copy of the run folder"
        )
    return state
