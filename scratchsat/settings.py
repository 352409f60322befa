"""The model settings a user chooses (:class:`ModelSettings`), kept free of torch so that the
command line can declare its options from them without importing a network."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TypeVar

T = TypeVar("T")


def setting(default, help: str):  # noqa: A002 - the CLI's word
    """A model setting: its default and the help text of its ``train`` option."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ModelSettings:
    """The architecture settings a user chooses. This is the one place to add one: each field
    becomes a ``scratchsat train`` option of the same name, a field of ``TrainConfig`` and of
    :class:`ModelConfig`, and a key of ``model.json``; the model factories read it from the
    config they are given."""

    width: int = setting(32, "simple/unet: channels of the first block.")
    depth: int | None = setting(None, "simple: blocks (3); unet: poolings (4).")
    activation: str = setting("relu", "simple/unet/resnet: relu, gelu, elu or silu.")
    norm: str = setting("batch", "batch, group or none.")
    init: str = setting("kaiming", "kaiming, xavier or orthogonal.")
    indices: str | None = setting(
        None,
        "Normalised differences (a - b) / (a + b) of named bands, fed as extra inputs: "
        "A-B[,C-D…], e.g. B08-B04,B03-B08 (NDVI, NDWI of Sentinel-2).",
    )


SETTINGS = tuple(f.name for f in fields(ModelSettings))


def flat_settings(name: str):
    """Class decorator for a dataclass that nests :class:`ModelSettings` in field ``name``: it
    also takes the settings flat (``TrainConfig(width=16)``, as the Python API always has) and
    reads them as attributes (``config.width``)."""

    def decorate(cls: type[T]) -> type[T]:
        generated = cls.__init__

        def __init__(self, *args, **kwargs) -> None:
            flat = {s: kwargs.pop(s) for s in SETTINGS if s in kwargs}
            if flat:
                kwargs[name] = replace(kwargs.get(name, ModelSettings()), **flat)
            generated(self, *args, **kwargs)

        def __getattr__(self, attribute: str):
            if attribute in SETTINGS:
                return getattr(getattr(self, name), attribute)
            raise AttributeError(f"{cls.__name__} has no attribute {attribute!r}")

        cls.__init__ = __init__  # type: ignore[misc,method-assign]
        cls.__getattr__ = __getattr__  # type: ignore[attr-defined]
        return cls

    return decorate
