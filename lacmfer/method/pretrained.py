"""Where the trunk's starting weights come from (`model.pretrained`, docs/METHOD.md §2).

- `imagenet`: torchvision's ResNet-18 ImageNet weights through its weights API, as the
  released code starts; downloaded once into the torch cache (`$TORCH_HOME/hub/checkpoints`);
  without internet the file must be placed there by hand, and the error says which.
- `synthfer_pretext`: the face-identification trunk of `lacmfer.method.pretext`, trained on
  first use for the configured width and cached.
- a path: a local torchvision-format ResNet-18 state dict.

`ensure_pretrained` fetches or trains what the config names (run it once before starting
many trials); `load_pretrained_trunk` initialises a model's trunk from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torchvision.models import ResNet18_Weights

from lacmfer.config import ExperimentConfig
from lacmfer.errors import UserError
from lacmfer.method.model import LACMFERNet, load_trunk_state, load_trunk_weights

IMAGENET_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1


def imagenet_weights_file() -> Path:
    """The file torchvision's weights API reads the ResNet-18 ImageNet weights from."""
    name = os.path.basename(urlparse(IMAGENET_WEIGHTS.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def imagenet_state_dict(progress: bool = True) -> dict[str, torch.Tensor]:
    """ResNet-18 ImageNet weights, downloaded into the torch cache on first use.

    Raises:
        UserError: the file is not in the cache and cannot be downloaded (one line naming
            the file to place there and where to get it).
    """
    try:
        return IMAGENET_WEIGHTS.get_state_dict(progress=progress)
    except (URLError, OSError) as err:
        raise UserError(
            f"model.pretrained: imagenet: cannot download torchvision's ResNet-18 weights ({err}); "
            f"on a machine without internet place {IMAGENET_WEIGHTS.url} at {imagenet_weights_file()}"
        ) from None


def ensure_pretrained(cfg: ExperimentConfig, progress: bool = True) -> None:
    """Download or train the trunk weights the config names, so trials only read them.

    `tune.py` and `train.py` call it before Ray starts: a local file that is missing or is
    not a ResNet-18 trunk is then one `UserError` naming it, not a failure of every trial.
    """
    choice = cfg.model.pretrained
    if choice == "imagenet":
        if not imagenet_weights_file().exists():
            imagenet_state_dict(progress)
    elif choice == "synthfer_pretext":
        from lacmfer.method.pretext import ensure_pretext_trunk  # renders and trains only for SynthFER

        ensure_pretext_trunk(cfg, progress)
    elif choice is not None:
        m = cfg.model
        model = LACMFERNet(width=m.width, global_blocks=m.global_blocks, local_blocks=m.local_blocks)
        load_trunk_weights(model, Path(choice))  # reads and checks the file as a run will


def load_pretrained_trunk(model: LACMFERNet, cfg: ExperimentConfig, progress: bool = False) -> None:
    """Initialise `model.trunk` from `cfg.model.pretrained` (nothing to do when it is None)."""
    choice = cfg.model.pretrained
    if choice is None:
        return
    if choice == "imagenet":
        load_trunk_state(model, imagenet_state_dict(progress), f"model.pretrained: imagenet ({imagenet_weights_file()})",
                         resnet18=True)
    elif choice == "synthfer_pretext":
        from lacmfer.method.pretext import ensure_pretext_trunk, read_pretext_trunk

        path = ensure_pretext_trunk(cfg, progress)
        load_trunk_state(model, read_pretext_trunk(path), str(path))
    else:
        load_trunk_weights(model, Path(choice))
