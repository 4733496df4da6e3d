"""The LA-CMFER network: shapes, quadrant independence, CBAM, pretrained trunk, groups."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision

from lacmfer.errors import UserError
from lacmfer.method.model import (
    CBAM,
    CBAMBlock,
    LACMFERNet,
    LACMFEROutput,
    SpatialAttention,
    load_trunk_weights,
    mean_view_logits,
    split_quadrants,
)

TRUNK_MODULES = ("conv1", "bn1", "layer1", "layer2")


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


def small_net(**kwargs: object) -> LACMFERNet:
    defaults: dict[str, object] = {"width": 0.125, "global_blocks": (1, 1), "local_blocks": 1}
    defaults.update(kwargs)
    return LACMFERNet(**defaults)  # type: ignore[arg-type]


def torchvision_trunk_state() -> dict[str, torch.Tensor]:
    full = torchvision.models.resnet18(weights=None).state_dict()
    return {k: v for k, v in full.items() if k.split(".")[0] in TRUNK_MODULES}


@pytest.mark.parametrize(
    ("width", "global_blocks", "local_blocks", "size", "num_classes"),
    [
        (0.125, (1, 1), 1, 48, 7),
        (0.125, (2, 1), 2, 64, 5),
        (0.25, (1, 2), 1, 112, 7),
        (0.125, (1, 1), 1, 56, 3),  # 7×7 trunk map: odd quadrants
        (0.125, (1, 1), 1, (48, 64), 7),  # non-square
    ],
)
def test_output_shapes(
    width: float,
    global_blocks: tuple[int, int],
    local_blocks: int,
    size: int | tuple[int, int],
    num_classes: int,
) -> None:
    model = LACMFERNet(num_classes, width, global_blocks, local_blocks)
    h, w = (size, size) if isinstance(size, int) else size
    out = model(torch.randn(3, 3, h, w))
    assert isinstance(out, LACMFEROutput)
    dim = round(1024 * width)
    assert model.feature_dim == dim
    assert out.feat_g.shape == out.feat_l.shape == (3, dim)
    assert out.logits_g.shape == out.logits_l.shape == (3, num_classes)
    assert len(model.global_branch.stage1) == global_blocks[0]
    assert len(model.global_branch.stage2) == global_blocks[1]
    assert all(len(stage) == local_blocks for stage in model.local_branch.stages)


def test_paper_setting_dimensions() -> None:
    # Width 1 without running it (too slow for CPU tests): channel counts of docs/METHOD.md §2.
    model = LACMFERNet()
    assert model.feature_dim == 1024
    assert model.trunk.out_channels == 128
    assert len(model.global_branch.stage1) == 6 and len(model.global_branch.stage2) == 3
    assert model.global_branch.stage1[0].conv1.in_channels == 128
    assert model.global_branch.stage1[-1].conv2.out_channels == 256
    assert model.global_branch.stage2[-1].conv2.out_channels == 1024
    for stage in model.local_branch.stages:
        assert len(stage) == 2
        assert stage[0].conv1.in_channels == 128 and stage[-1].conv2.out_channels == 256
        assert stage[0].conv1.stride == (2, 2)


def test_trunk_map_is_an_eighth_of_the_input() -> None:
    model = small_net().eval()
    assert model.trunk(torch.randn(1, 3, 64, 64)).shape == (1, 32 // 2, 8, 8)


def test_the_inference_logits_are_the_mean_of_the_views() -> None:
    model = small_net().eval()
    out = model(torch.randn(2, 3, 48, 48))
    torch.testing.assert_close(mean_view_logits(out.logits_g, out.logits_l), (out.logits_g + out.logits_l) / 2)


def test_split_quadrants_covers_the_map_once() -> None:
    fmap = torch.arange(2 * 7 * 5, dtype=torch.float32).reshape(1, 2, 7, 5)
    tl, tr, bl, br = split_quadrants(fmap)
    assert tl.shape[-2:] == (3, 2) and tr.shape[-2:] == (3, 3)
    assert bl.shape[-2:] == (4, 2) and br.shape[-2:] == (4, 3)
    rebuilt = torch.cat([torch.cat([tl, tr], -1), torch.cat([bl, br], -1)], -2)
    torch.testing.assert_close(rebuilt, fmap)


def test_local_subnetworks_are_independent() -> None:
    model = small_net(local_blocks=2).eval()
    stages = model.local_branch.stages
    ids = [{id(p) for p in stage.parameters()} for stage in stages]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not ids[i] & ids[j]

    fmap = torch.randn(2, model.trunk.out_channels, 6, 6, requires_grad=True)
    feat_l = model.local_branch(fmap)
    part = feat_l.shape[1] // 4
    quadrant_masks = []
    for k in range(4):
        mask = torch.zeros(6, 6, dtype=torch.bool)
        rows = slice(0, 3) if k < 2 else slice(3, 6)
        cols = slice(0, 3) if k % 2 == 0 else slice(3, 6)
        mask[rows, cols] = True
        quadrant_masks.append(mask)
    for k in range(4):
        (grad,) = torch.autograd.grad(feat_l[:, k * part : (k + 1) * part].sum(), fmap, retain_graph=True)
        inside = grad[..., quadrant_masks[k]]
        outside = grad[..., ~quadrant_masks[k]]
        assert inside.abs().sum() > 0
        assert torch.count_nonzero(outside) == 0


def test_cbam_scales_by_channel_then_spatial_attention_in_unit_interval() -> None:
    cbam = CBAM(32)
    x = torch.randn(4, 32, 5, 7) * 10
    a_c = cbam.channel(x)
    a_s = cbam.spatial(x * a_c)
    assert a_c.shape == (4, 32, 1, 1) and a_s.shape == (4, 1, 5, 7)
    for a in (a_c, a_s):
        assert a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(cbam(x), x * a_c * a_s)


def test_backward_reaches_every_parameter() -> None:
    model = small_net()
    out = model(torch.randn(4, 3, 48, 48))
    (out.logits_g.sum() + out.logits_l.sum() + out.feat_g.sum() + out.feat_l.sum()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_param_groups_cover_every_parameter_once() -> None:
    model = small_net()
    groups = model.param_groups(0.01)
    assert [g["name"] for g in groups] == ["trunk", "branches"]
    assert groups[0]["lr"] == pytest.approx(0.001) and groups[1]["lr"] == pytest.approx(0.01)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in model.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.trunk.parameters()}
    torch.optim.SGD(groups, lr=0.01, momentum=0.9, nesterov=True)  # accepted as is


def test_channels_last_matches_contiguous() -> None:
    model = small_net(width=0.25).eval()
    x = torch.randn(2, 3, 64, 64)
    ref = model(x)
    model = model.to(memory_format=torch.channels_last)
    out = model(x.to(memory_format=torch.channels_last))
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_gives_finite_outputs() -> None:
    model = small_net()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 48, 48))
    assert all(torch.isfinite(t.float()).all() for t in out)


def test_rejects_bad_arguments_and_tiny_inputs() -> None:
    with pytest.raises(ValueError, match="width"):
        LACMFERNet(width=0)
    with pytest.raises(ValueError, match="global_blocks"):
        LACMFERNet(global_blocks=(6, 0))
    with pytest.raises(ValueError, match="local_blocks"):
        LACMFERNet(local_blocks=0)
    with pytest.raises(ValueError, match="too small"):
        small_net()(torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("wrapping", ["plain", "state_dict", "model_module"])
def test_load_trunk_weights_round_trip(tmp_path: Path, wrapping: str) -> None:
    full = torchvision.models.resnet18(weights=None).state_dict()
    for key, value in full.items():  # make BN statistics distinguishable from defaults
        if value.is_floating_point():
            value.normal_()
    if wrapping == "state_dict":
        payload: object = {"state_dict": full, "epoch": 3}
    elif wrapping == "model_module":
        payload = {"model": {f"module.{k}": v for k, v in full.items()}}
    else:
        payload = full
    path = tmp_path / "resnet18.pth"
    torch.save(payload, path)

    model = LACMFERNet(global_blocks=(1, 1), local_blocks=1)
    branches_before = {k: v.clone() for k, v in model.global_branch.state_dict().items()}
    load_trunk_weights(model, path)
    trunk = model.trunk.state_dict()
    assert set(trunk) == {k for k in full if k.split(".")[0] in TRUNK_MODULES}
    for key, value in trunk.items():
        torch.testing.assert_close(value, full[key], rtol=0, atol=0)
    for key, value in model.global_branch.state_dict().items():
        torch.testing.assert_close(value, branches_before[key], rtol=0, atol=0)


def test_load_trunk_weights_accepts_missing_bn_counters(tmp_path: Path) -> None:
    state = {k: v for k, v in torchvision_trunk_state().items() if "num_batches_tracked" not in k}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    load_trunk_weights(LACMFERNet(global_blocks=(1, 1), local_blocks=1), path)


def test_load_trunk_weights_missing_key(tmp_path: Path) -> None:
    state = torchvision_trunk_state()
    del state["layer2.0.downsample.0.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match=r"partial\.pth.*missing.*layer2\.0\.downsample\.0\.weight"):
        load_trunk_weights(LACMFERNet(global_blocks=(1, 1), local_blocks=1), path)


def test_load_trunk_weights_wrong_shape(tmp_path: Path) -> None:
    state = torchvision_trunk_state()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    expected = r"shape\.pth.*layer1\.0\.conv1\.weight is \(64, 64, 1, 1\), expected \(64, 64, 3, 3\)"
    with pytest.raises(UserError, match=expected):
        load_trunk_weights(LACMFERNet(global_blocks=(1, 1), local_blocks=1), path)


def test_load_trunk_weights_requires_width_one(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(torchvision_trunk_state(), path)
    with pytest.raises(UserError, match=r"r18\.pth.*width 1"):
        load_trunk_weights(small_net(), path)


@pytest.mark.parametrize("content", [None, b"not a checkpoint", "list"])
def test_load_trunk_weights_bad_file(tmp_path: Path, content: bytes | str | None) -> None:
    path = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "list":
        torch.save([torch.zeros(1)], path)
    with pytest.raises(UserError, match=r"bad\.pth"):
        load_trunk_weights(LACMFERNet(global_blocks=(1, 1), local_blocks=1), path)


def _neutral_attention(cbam: CBAM) -> CBAM:
    """Zero every attention weight: both attentions become σ(0) = ½ everywhere."""
    with torch.no_grad():
        for p in cbam.parameters():
            p.zero_()
    return cbam


def test_release_cbam_is_bias_free_with_a_49_kernel_and_a_skip_inside() -> None:
    paper, release = CBAM(32), CBAM(32, variant="release")
    assert paper.spatial.conv.kernel_size == (7, 7) and release.spatial.conv.kernel_size == (49, 49)
    assert all(m.bias is not None for m in paper.channel.mlp if isinstance(m, torch.nn.Linear))
    assert all(m.bias is None for m in release.channel.mlp if isinstance(m, torch.nn.Linear))
    x = torch.randn(2, 32, 5, 7)
    # With both attentions at ½: the paper block gives x/4, the released one x + x/4.
    torch.testing.assert_close(_neutral_attention(paper)(x), x / 4)
    torch.testing.assert_close(_neutral_attention(release)(x), x + x / 4)


@pytest.mark.parametrize("kernel", [7, 49])
@pytest.mark.parametrize("size", [(2, 2), (3, 5), (8, 8), (30, 31)])
def test_spatial_attention_kernel_crop_is_exact(kernel: int, size: tuple[int, int]) -> None:
    attention = SpatialAttention(kernel)
    x = torch.randn(3, 6, *size, dtype=torch.float64, requires_grad=True)
    attention.double()
    pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
    full = torch.sigmoid(attention.conv(pooled))  # the uncropped kernel over the zero-padded map
    ours = attention(x)
    torch.testing.assert_close(ours, full, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(full)
    g_full = torch.autograd.grad((full * probe).sum(), [x, attention.conv.weight])
    g_ours = torch.autograd.grad((ours * probe).sum(), [x, attention.conv.weight])
    for a, b in zip(g_ours, g_full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_branch_init_pytorch_keeps_the_layer_defaults_and_he_redraws() -> None:
    # PyTorch's conv default is uniform within ±1/√fan_in; He fan-out is a normal with
    # std √(2/fan_out), which exceeds that bound on many of a block's weights.
    def beyond_default_bound(block: CBAMBlock) -> float:
        w = block.conv2.weight
        return (w.abs() > 1 / math.sqrt(w[0].numel())).double().mean().item()

    assert beyond_default_bound(CBAMBlock(16, 16, init="pytorch")) == 0.0
    assert beyond_default_bound(CBAMBlock(16, 16, init="he")) > 0.2
    net = small_net(branch_init="pytorch")
    first = net.global_branch.stage1[0]
    assert (first.conv1.weight.abs() <= 1 / math.sqrt(first.conv1.weight[0].numel())).all()
    # The trunk keeps He initialisation (then any pretrained weights) under both.
    w = net.trunk.layer1[0].conv1.weight
    assert (w.abs() > 1 / math.sqrt(w[0].numel())).double().mean() > 0.2
