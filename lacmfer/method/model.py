"""The LA-CMFER network (docs/METHOD.md §2): a shared ResNet-18 trunk, a global and a local branch.

```
x ──trunk (conv1, bn1, relu, maxpool, layer1, layer2)──► F  (2u ch, 1/8 size)
F ──6 CBAM blocks, stride 2 ─► 3 CBAM blocks, stride 2 ─► avg pool ─► g (16u) ─► z_g
F ──4 quadrants, each through its OWN 2 CBAM blocks, stride 2 ─► avg pool (4u each)
  ─► concat ─► l (16u) ─► z_l
```

`u` is the channel unit, round(64 · width): at width 1 the channel counts are the
paper's (64, 128, 256, 1024) and g, l are 1024-d. Every count is a multiple of `u`, so
the global and local features always have the same size (`feature_dim`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv1x1

from lacmfer.errors import UserError

_RESNET18_STEM_CHANNELS = 64
# The trunk maps H to ceil(H / 8) (three stride-2 steps that round up); four non-empty
# quadrants need a 2×2 map, so H ≥ 9.
_MIN_INPUT_SIZE = 9
_TRUNK_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.")
_CHECKPOINT_NESTING_KEYS = ("state_dict", "model")


def mean_view_logits(logits_g: Tensor, logits_l: Tensor) -> Tensor:
    """The inference rule: the mean of the global and local logits, (z_g + z_l) / 2 (docs/METHOD.md §2)."""
    return (logits_g + logits_l) / 2


class LACMFEROutput(NamedTuple):
    """Features and logits of both views for one batch.

    feat_g, feat_l: [B, feature_dim]; logits_g, logits_l: [B, num_classes].
    """

    feat_g: Tensor
    feat_l: Tensor
    logits_g: Tensor
    logits_l: Tensor


def _init_conv(conv: nn.Conv2d) -> None:
    # He init for convs followed by BN + ReLU, as torchvision's ResNet does.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")


class ChannelAttention(nn.Module):
    """CBAM channel attention: a_c = σ(MLP(avgpool(x)) + MLP(maxpool(x))), in [0, 1]^C.

    The MLP is shared between the two descriptors: C → hidden → C with a ReLU between.
    `hidden = max(C // reduction, min(C, 8))`: C / 16 at the paper widths (C ≥ 256), and
    at least 8 units (or C if fewer) so narrow test networks keep a usable bottleneck.
    """

    def __init__(self, channels: int, reduction: int = 16, bias: bool = True) -> None:
        super().__init__()
        hidden = max(channels // reduction, min(channels, 8))
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, bias=bias), nn.ReLU(inplace=True), nn.Linear(hidden, channels, bias=bias)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return the attention weights [B, C, 1, 1] for x [B, C, H, W]."""
        avg = x.mean(dim=(2, 3))
        mx = x.amax(dim=(2, 3))
        weights = torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        return weights[:, :, None, None]


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a = σ(conv7×7([mean_c x; max_c x])), in [0, 1]^{H×W}."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        """Return the attention map [B, 1, H, W] for x [B, C, H, W]."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        # Taps more than H−1 (W−1) from the centre only ever meet the zero padding: the
        # central (2H−1)×(2W−1) crop of the kernel gives the same map, and a 49×49 kernel
        # on a 4×4 map costs what a 7×7 one does.
        centre = self.conv.kernel_size[0] // 2
        reach_h, reach_w = min(centre, x.shape[-2] - 1), min(centre, x.shape[-1] - 1)
        weight = self.conv.weight[..., centre - reach_h:centre + reach_h + 1, centre - reach_w:centre + reach_w + 1]
        return torch.sigmoid(F.conv2d(pooled, weight, self.conv.bias, padding=(reach_h, reach_w)))


#: `model.cbam` → (MLP biases, spatial kernel, skip connection inside the block).
CBAM_VARIANTS = {
    "paper": (True, 7, False),  # Woo et al., ECCV 2018, as docs/METHOD.md §2 describes it
    "release": (False, 49, True),  # the third-party block the released code imports
}


class CBAM(nn.Module):
    """Channel then spatial attention: x' = a_c ⊙ x, y = a_s ⊙ x' (+ x for the `release` variant).

    `release` is the block the authors' code imports: a bias-free MLP, a 49×49 spatial
    kernel (at 224 px it covers the whole 14×14 and 7×7 maps, so the spatial attention is
    global) and y = x + a_s ⊙ x'. At CPU sizes every map is smaller than 25 px, where a
    49×49 kernel is global too, so the variant keeps its meaning at any input size.
    """

    def __init__(self, channels: int, reduction: int = 16, variant: str = "paper") -> None:
        super().__init__()
        bias, kernel, self.skip = CBAM_VARIANTS[variant]
        self.channel = ChannelAttention(channels, reduction, bias)
        self.spatial = SpatialAttention(kernel)

    def forward(self, x: Tensor) -> Tensor:
        attended = x * self.channel(x)
        attended = attended * self.spatial(attended)
        return x + attended if self.skip else attended


class CBAMBlock(nn.Module):
    """Basic residual block with CBAM on the residual path.

    y = ReLU(CBAM(BN(conv3×3(ReLU(BN(conv3×3(x)))))) + shortcut(x)), the shortcut a
    1×1 conv + BN projection when the stride or the channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, cbam: str = "paper",
                 init: str = "he") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.cbam = CBAM(out_channels, variant=cbam)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        if init == "he":  # otherwise PyTorch's layer defaults, as in the released code
            for conv in (self.conv1, self.conv2, *self.shortcut.modules()):
                if isinstance(conv, nn.Conv2d):
                    _init_conv(conv)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.cbam(self.bn2(self.conv2(out)))
        return self.relu(out + self.shortcut(x))


def cbam_stage(in_channels: int, out_channels: int, blocks: int, stride: int, cbam: str = "paper",
               init: str = "he") -> nn.Sequential:
    """`blocks` CBAM blocks; the first one changes the stride and the width."""
    layers = [CBAMBlock(in_channels, out_channels, stride, cbam, init)]
    layers += [CBAMBlock(out_channels, out_channels, 1, cbam, init) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class Trunk(nn.Module):
    """ResNet-18 stem and its first two stages; state-dict keys match torchvision's.

    Output: 2u channels at 1/8 of the input size (128 × 28 × 28 at width 1, 224 px).
    """

    def __init__(self, unit: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, unit, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(unit)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(unit, unit), BasicBlock(unit, unit))
        downsample = nn.Sequential(conv1x1(unit, 2 * unit, stride=2), nn.BatchNorm2d(2 * unit))
        self.layer2 = nn.Sequential(
            BasicBlock(unit, 2 * unit, stride=2, downsample=downsample),
            BasicBlock(2 * unit, 2 * unit),
        )
        self.out_channels = 2 * unit
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                _init_conv(module)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer2(self.layer1(x))


class GlobalBranch(nn.Module):
    """Two CBAM stages (2u → 4u, then 4u → 16u, both stride 2), global average pool."""

    def __init__(self, unit: int, blocks: tuple[int, int], cbam: str = "paper", init: str = "he") -> None:
        super().__init__()
        self.stage1 = cbam_stage(2 * unit, 4 * unit, blocks[0], 2, cbam, init)
        self.stage2 = cbam_stage(4 * unit, 16 * unit, blocks[1], 2, cbam, init)
        self.out_channels = 16 * unit

    def forward(self, fmap: Tensor) -> Tensor:
        """Trunk map [B, 2u, H, W] → g [B, 16u]."""
        return self.stage2(self.stage1(fmap)).mean(dim=(2, 3))


def split_quadrants(fmap: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cut [B, C, H, W] into (top-left, top-right, bottom-left, bottom-right).

    The cut is at H // 2 and W // 2: for odd sizes the extra row/column goes to the
    bottom/right quadrants. Needs H, W ≥ 2.
    """
    h, w = fmap.shape[-2] // 2, fmap.shape[-1] // 2
    top, bottom = fmap[..., :h, :], fmap[..., h:, :]
    return top[..., :w], top[..., w:], bottom[..., :w], bottom[..., w:]


class LocalBranch(nn.Module):
    """Four independent CBAM stages (2u → 4u, stride 2), one per quadrant of the trunk map.

    l = [pool(S_1(Q_1)); pool(S_2(Q_2)); pool(S_3(Q_3)); pool(S_4(Q_4))], 16u-d, in the
    quadrant order of `split_quadrants`. Sub-network k sees only quadrant k.
    """

    def __init__(self, unit: int, blocks: int, cbam: str = "paper", init: str = "he") -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            cbam_stage(2 * unit, 4 * unit, blocks, 2, cbam, init) for _ in range(4)
        )
        self.out_channels = 16 * unit

    def forward(self, fmap: Tensor) -> Tensor:
        """Trunk map [B, 2u, H, W] → l [B, 16u]."""
        quadrants = split_quadrants(fmap)
        pooled = [stage(q).mean(dim=(2, 3)) for stage, q in zip(self.stages, quadrants)]
        return torch.cat(pooled, dim=1)


class LACMFERNet(nn.Module):
    """LA-CMFER: shared trunk, global branch and local (quadrant) branch, two classifiers.

    Args:
        num_classes: number of expression classes (7 in the CMFER protocol).
        width: multiplier of every channel count, trunk included; the channel unit is
            u = round(64 · width) (64 at width 1, the paper setting).
        global_blocks: CBAM blocks in the two global stages (paper: 6, 3).
        local_blocks: CBAM blocks in each quadrant stage (paper: 2).
        cbam: `paper` or `release` attention blocks in both views (`CBAM`).
        branch_init: `he` (fan-out, like torchvision's ResNet) or `pytorch` (the layers'
            own defaults, as the released code leaves its views) for both views' convs.

    Inputs are [B, 3, H, W] with H, W ≥ 9 (the trunk map, ceil(H/8) × ceil(W/8), must be
    at least 2×2 to have four quadrants); the paper uses 224 px, CPU tests 48–64 px.
    """

    def __init__(
        self,
        num_classes: int = 7,
        width: float = 1.0,
        global_blocks: tuple[int, int] = (6, 3),
        local_blocks: int = 2,
        cbam: str = "paper",
        branch_init: str = "he",
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if not width > 0:
            raise ValueError(f"width must be positive, got {width}")
        if len(global_blocks) != 2 or min(global_blocks) < 1:
            raise ValueError(f"global_blocks must be two counts ≥ 1, got {global_blocks}")
        if local_blocks < 1:
            raise ValueError(f"local_blocks must be at least 1, got {local_blocks}")
        unit = max(1, round(_RESNET18_STEM_CHANNELS * width))
        self.num_classes = num_classes
        self.width = width
        self.trunk = Trunk(unit)
        if cbam not in CBAM_VARIANTS:
            raise ValueError(f"cbam must be one of {sorted(CBAM_VARIANTS)}, got {cbam!r}")
        if branch_init not in ("he", "pytorch"):
            raise ValueError(f"branch_init must be 'he' or 'pytorch', got {branch_init!r}")
        self.global_branch = GlobalBranch(unit, (global_blocks[0], global_blocks[1]), cbam, branch_init)
        self.local_branch = LocalBranch(unit, local_blocks, cbam, branch_init)
        self.feature_dim = 16 * unit  # both views: 1024 at width 1
        self.classifier_g = nn.Linear(self.feature_dim, num_classes)
        self.classifier_l = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: Tensor) -> LACMFEROutput:
        if min(x.shape[-2:]) < _MIN_INPUT_SIZE:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} too small: at least {_MIN_INPUT_SIZE} px a "
                "side is needed for a 2×2 trunk map (four quadrants)"
            )
        fmap = self.trunk(x)
        feat_g = self.global_branch(fmap)
        feat_l = self.local_branch(fmap)
        return LACMFEROutput(feat_g, feat_l, self.classifier_g(feat_g), self.classifier_l(feat_l))

    def param_groups(self, lr: float, trunk_lr_scale: float = 0.1) -> list[dict[str, Any]]:
        """Optimiser parameter groups: the trunk at lr · trunk_lr_scale, the rest at lr.

        docs/METHOD.md §4: the shared trunk learns at lr/10, branches and classifiers at lr. Every
        parameter is in exactly one group.
        """
        trunk_ids = {id(p) for p in self.trunk.parameters()}
        heads = [p for p in self.parameters() if id(p) not in trunk_ids]
        return [
            {"name": "trunk", "params": list(self.trunk.parameters()), "lr": lr * trunk_lr_scale},
            {"name": "branches", "params": heads, "lr": lr},
        ]


def _read_state_dict(path: Path) -> Mapping[str, Any]:
    """Load a checkpoint file and unwrap the usual nestings to a flat state dict."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: pretrained trunk file not found") from None
    except Exception as err:  # torch.load raises many types for a corrupt/foreign file
        raise UserError(
            f"{path}: cannot read as a torch state dict ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    for key in _CHECKPOINT_NESTING_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise UserError(
            f"{path}: expected a ResNet-18 state dict (a mapping of parameter names to "
            f"tensors, possibly under 'state_dict' or 'model'), got {type(obj).__name__}"
        )
    # DataParallel / DDP checkpoints prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _first_few(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", … ({len(items)} in all)" if len(items) > n else "")


def load_trunk_weights(model: LACMFERNet, path: Path) -> None:
    """Initialise `model.trunk` from a local torchvision-format ResNet-18 state dict.

    Accepts a plain state dict or one nested under "state_dict" or "model", with or
    without a "module." prefix. Only conv1, bn1, layer1 and layer2 are used (fc, layer3
    and layer4 are ignored); BatchNorm `num_batches_tracked` counters may be absent
    (older checkpoints). Nothing is downloaded.

    Raises:
        UserError: the file is missing or unreadable, the model's width is not 1, or a
            trunk key is missing or has the wrong shape (the message names the file,
            the first offending keys and the expected shapes).
    """
    path = Path(path)
    _require_resnet18_width(model, str(path))
    load_trunk_state(model, _read_state_dict(path), str(path))


def _require_resnet18_width(model: LACMFERNet, origin: str) -> None:
    stem = model.trunk.conv1.out_channels
    if stem != _RESNET18_STEM_CHANNELS:
        raise UserError(
            f"{origin}: a pretrained ResNet-18 trunk requires model width 1 "
            f"(got width {model.width}: {stem} stem channels, ResNet-18 has 64)"
        )


def load_trunk_state(model: LACMFERNet, source: Mapping[str, Any], origin: str,
                     resnet18: bool = False) -> None:
    """Initialise `model.trunk` from a state dict with the trunk's (torchvision's) key names.

    Any width loads when the shapes match (a pretext trunk trained at the model's width);
    `resnet18=True` marks torchvision's own ResNet-18 weights, which need width 1.
    `origin` names the weights in errors. Keys outside the trunk are ignored.

    Raises:
        UserError: width not 1 for ResNet-18 weights, or a trunk key missing or of the
            wrong shape (the first offending keys and the expected shapes).
    """
    if resnet18:
        _require_resnet18_width(model, origin)
    expected = model.trunk.state_dict()
    missing, mismatched = [], []
    loaded: dict[str, Tensor] = {}
    for key, target in expected.items():
        value = source.get(key)
        if value is None:
            if key.endswith("num_batches_tracked"):
                loaded[key] = target
            else:
                missing.append(key)
        elif not isinstance(value, Tensor) or value.shape != target.shape:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            mismatched.append(f"{key} is {got}, expected {tuple(target.shape)}")
        else:
            loaded[key] = value
    if missing or mismatched:
        problems = []
        if missing:
            problems.append(f"missing trunk keys {_first_few(missing)}")
        if mismatched:
            problems.append(f"wrong shapes: {_first_few(mismatched, 3)}")
        raise UserError(
            f"{origin}: not a trunk state dict for this model: {'; '.join(problems)} "
            f"(expected the keys {', '.join(p.rstrip('.') for p in _TRUNK_PREFIXES)}.* "
            f"of torchvision.models.resnet18 at width {model.width})"
        )
    model.trunk.load_state_dict(loaded, strict=True)
