"""``train --init-from RUN``: start from an earlier run's weights instead of random ones.

The architecture must be the same (model and its settings); the bands must be the same set,
matched by name (a reordering permutes the first convolution's input channels); the classes
may differ, and then every layer whose shape depends on them (the last) starts from random
weights, which is said. From random weights stays the default and the point of the project.
"""

from __future__ import annotations

from torch import nn

from ..bundle import load_bundle
from ..errors import InputError
from ..models import ModelConfig
from ..tiles.format import Tiles


def init_from(model: nn.Module, config: ModelConfig, run: str, tiles: Tiles) -> list[str]:
    """Load ``run``'s weights into ``model`` (built from ``config`` for ``tiles``); returns
    the names of the parameters left at their random start (shapes that changed)."""
    source = load_bundle(run, "cpu")
    theirs, ours = source.meta.model or {}, config.to_dict()
    different = [
        f"{key} {theirs.get(key)!r} (now {ours.get(key)!r})"
        for key in sorted(set(theirs) | set(ours))
        if key not in ("in_channels", "num_classes", "index_bands")  # indices: by name
        and theirs.get(key) != ours.get(key)
    ]
    if different:
        raise InputError(
            f"--init-from {run}: its model differs: {', '.join(different)}; train with the "
            "same --model and model settings to start from its weights"
        )
    names = [b["name"] for b in tiles.info["bands"]]
    trained = source.meta.band_list
    if sorted(names) != sorted(trained):
        missing = [n for n in trained if n not in names]
        extra = [n for n in names if n not in trained]
        raise InputError(
            f"--init-from {run}: it was trained on bands {', '.join(trained)}, these tiles "
            f"have {', '.join(names)} (missing: {', '.join(missing) or 'none'}; new: "
            f"{', '.join(extra) or 'none'}); its weights fit only the same bands"
        )
    state = source.model.state_dict()
    if names != trained:  # same bands in another order: permute the first layer's inputs
        inputs = len(trained) + len(config.index_bands)  # --indices' inputs follow the bands
        order = [trained.index(n) for n in names] + list(range(len(trained), inputs))
        first = next(k for k, v in state.items() if v.dim() == 4 and v.shape[1] == inputs)
        state[first] = state[first][:, order]
    own = model.state_dict()
    fresh = [k for k, v in own.items() if k not in state or state[k].shape != v.shape]
    model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    return [k for k in fresh if not k.endswith("num_batches_tracked")]
