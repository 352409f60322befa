"""The model settings a user chooses (:class:`ModelSettings`), kept free of torch so that the
command line can declare its options from them without importing a network."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


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


SETTINGS = tuple(f.name for f in fields(ModelSettings))
