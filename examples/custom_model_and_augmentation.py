"""Plug in your own albumentations pipeline and your own network (Python API only).

Run: python examples/custom_model_and_augmentation.py [OUTDIR] [EPOCHS]
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks PyPI at import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import scratchsat  # noqa: E402
from scratchsat.training.augment import BandJitter  # noqa: E402


class DilatedFCN(nn.Module):
    """A small fully convolutional network with growing dilation: context without pooling."""

    def __init__(self, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        layers, channels = [], in_channels
        for dilation in (1, 2, 4, 8, 1):
            layers += [
                nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, num_classes, H, W)


# The factory gets the ModelConfig (bands in, classes out, width …). A bundle records the name,
# so a process that loads this model registers it first, as this script does.
scratchsat.register_model(
    "dilated-fcn", "segmentation", lambda c: DilatedFCN(c.in_channels, c.num_classes, c.width)
)

# Geometric transforms move image and mask together; nothing here assumes RGB or 8 bits.
pipeline = A.Compose(
    [
        A.HorizontalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.Affine(
            scale=(0.9, 1.1),
            rotate=(-10, 10),
            border_mode=cv2.BORDER_REFLECT_101,
            mask_interpolation=cv2.INTER_NEAREST,
            p=0.5,
        ),
        BandJitter(scale=0.05, shift=0.05, p=0.5),
    ]
)

out = Path(sys.argv[1] if len(sys.argv) > 1 else "example-custom")
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 12
out.mkdir(parents=True, exist_ok=True)
scene = scratchsat.write_scene(
    out / "scene.tif", out / "labels.tif", width=448, height=448, count=8, seed=5
)
tiles = scratchsat.tile(
    [scene.path],
    scene.labels_path,
    out / "tiles",
    overwrite=True,
    options=scratchsat.TileOptions(patch_size=32, block_size=64),
)
config = scratchsat.TrainConfig(model="dilated-fcn", width=24, epochs=epochs)
report = scratchsat.train(tiles, out / "run", config, augment=pipeline, overwrite=True)
print(
    f"dilated-fcn with a custom pipeline: validation accuracy "
    f"{report['val']['overall_accuracy']:.3f}, mean IoU {report['val']['mean_iou']:.3f}"
)
bundle = scratchsat.load_bundle(out / "run")
print(
    f"reloaded {type(bundle.model).__name__} with "
    f"{sum(p.numel() for p in bundle.model.parameters()):,} parameters"
)
