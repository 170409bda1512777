"""The model: torchvision's ResNet18 with its 1000-way ImageNet head replaced by one for our classes.

Also where its starting weights come from (`--weights auto|imagenet|none|PATH`). ImageNet weights are read from the
torch hub cache when the file is there and downloaded otherwise; with no network the error names the exact file and
folder to put it in. `freeze_layers` fixes the early layers (and their batch-norm statistics) when fine-tuning from
pretrained weights: fewer gradients to compute, and the generic edge and texture filters stay as ImageNet made them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights

from cxr.errors import UserError

ARCH = "resnet18"
# Stages of ResNet18 in forward order; freezing "layer2" freezes the stem, layer1 and layer2.
FREEZE_LEVELS = ("none", "stem", "layer1", "layer2", "layer3")
_STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",))
IMAGENET_URL = ResNet18_Weights.IMAGENET1K_V1.url
IMAGENET_FILE = os.path.basename(IMAGENET_URL)  # resnet18-f37072fd.pth


class WeightsUnavailable(UserError):
    """ImageNet weights could not be found in the cache nor downloaded."""


def imagenet_cache_path() -> Path:
    """Where torch.hub keeps downloaded weights: $TORCH_HOME/hub/checkpoints/<file>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE


def load_imagenet_state_dict(download: bool = True) -> dict[str, torch.Tensor]:
    """ImageNet ResNet18 weights from the torch hub cache, downloading them there first if allowed and needed."""
    path = imagenet_cache_path()
    if not path.exists():
        how = (
            f"put {IMAGENET_FILE} (from {IMAGENET_URL}) into {path.parent}, "
            "or set TORCH_HOME to a folder whose hub/checkpoints/ holds it"
        )
        if not download:
            raise WeightsUnavailable(f"ImageNet weights are not in the cache: {how}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(IMAGENET_URL, str(path), hash_prefix=IMAGENET_FILE.split("-")[1][:8], progress=False)
        except Exception as e:  # network errors come as URLError, OSError, socket.gaierror, ...
            path.unlink(missing_ok=True)
            raise WeightsUnavailable(f"could not download ImageNet weights ({type(e).__name__}); offline, {how}") from e
    return _load_state_dict_file(path)


def _load_state_dict_file(path: "str | Path") -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise ValueError(f"{Path(path).name} is not a readable weights file ({type(e).__name__})") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # also accept a cxr checkpoint as a starting point
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{Path(path).name} does not hold a state dict of tensors")
    return state


RANDOM_FALLBACK = "random initialisation: "  # how `source` begins when "auto" could not get ImageNet weights


def is_random_fallback(source: str) -> bool:
    """Did `build_model(weights="auto")` fall back to random weights? (Its `source` sentence says so.)"""
    return source.startswith(RANDOM_FALLBACK)


def build_model(num_classes: int, weights: str = "none", quiet_fallback: bool = False) -> tuple[nn.Module, str]:
    """ResNet18 with a fresh `num_classes`-way `fc`, and a sentence saying where its weights came from.

    weights: "imagenet" (cache, else download, else WeightsUnavailable), "none" (random), "auto" (imagenet when it
    can be had, else random with a warning), or a path to a state-dict file. With `quiet_fallback` the fallback is
    not warned about (the caller reads `is_random_fallback(source)` and tells the user itself: `warnings` is
    process-global state and not safe to capture from a training thread).
    """
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    model = torchvision.models.resnet18(weights=None)
    source = "random initialisation (--weights none)"
    if weights in ("imagenet", "auto"):
        try:
            model.load_state_dict(load_imagenet_state_dict())
            source = f"ImageNet ({IMAGENET_FILE})"
        except WeightsUnavailable as e:
            if weights == "imagenet":
                raise
            source = f"{RANDOM_FALLBACK}{e}. Accuracy will be much lower and training slower without them"
            if not quiet_fallback:
                warnings.warn(source, stacklevel=2)
    elif weights != "none":
        if not Path(weights).is_file():
            raise ValueError(f"weights {weights!r}: no such file; use auto, imagenet, none or the path of a weights file")
        state = _load_state_dict_file(weights)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the head is always new
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("fc.")]:
            raise ValueError(f"{Path(weights).name} is not a ResNet18 state dict ({len(unexpected)} unexpected keys)")
        source = f"weights file {Path(weights).name}"
    # The new head: the one part that always starts from scratch, sized for our classes.
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model, source


def freeze_layers(model: nn.Module, upto: str) -> list[nn.Module]:
    """Stop training the stem and stages up to `upto` (see FREEZE_LEVELS). Returns the frozen modules."""
    if upto not in FREEZE_LEVELS:
        raise ValueError(f"freeze must be one of {', '.join(FREEZE_LEVELS)}, got {upto!r}")
    frozen = []
    for names in _STAGES[: FREEZE_LEVELS.index(upto)]:
        for name in names:
            module = getattr(model, name)
            module.requires_grad_(False)
            frozen.append(module)
    model._cxr_frozen = frozen  # set_train_mode keeps these in eval mode
    return frozen


def set_train_mode(model: nn.Module) -> None:
    """model.train(), except frozen layers: their batch norm keeps its ImageNet statistics."""
    model.train()
    for module in getattr(model, "_cxr_frozen", []):
        module.eval()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
