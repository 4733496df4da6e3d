"""Inverse-decay learning rate and the clustering schedule (docs/METHOD.md §4, §5)."""

from __future__ import annotations

import math

import pytest
import torch

from lacmfer.method.schedules import (
    CLUSTER_RAMPS,
    InverseDecay,
    alignment_warmup,
    clustering_schedule,
    inverse_decay_scheduler,
)

# ---------------------------------------------------------------- learning rate


@pytest.mark.parametrize(
    ("step", "expected_factor"),
    [
        (0, 1.0),
        (1000, 2.0**-0.75),  # 1 + 10 · 0.1 = 2
        (5000, 6.0**-0.75),  # 1 + 10 · 0.5 = 6
        (10000, 11.0**-0.75),
        (15000, 11.0**-0.75),  # constant after T_decay
        (20000, 11.0**-0.75),
    ],
)
def test_inverse_decay_paper_defaults(step: int, expected_factor: float) -> None:
    assert InverseDecay()(step) == pytest.approx(expected_factor, rel=1e-12)


def test_inverse_decay_custom_parameters() -> None:
    # γ = 4, p = 0.5, T = 100: at t = 25, (1 + 4 · 0.25)^(−0.5) = 2^(−0.5)
    assert 0.1 * InverseDecay(gamma=4.0, power=0.5, decay_steps=100)(25) == pytest.approx(
        0.1 / math.sqrt(2.0), rel=1e-12
    )


def test_inverse_decay_rejects_non_positive_horizon() -> None:
    with pytest.raises(ValueError, match="decay_steps"):
        InverseDecay(decay_steps=0)


def _two_group_sgd(lr: float) -> tuple[torch.nn.Module, torch.optim.SGD]:
    """A trunk at lr/10 and a head at lr, as the trainer builds them (docs/METHOD.md §4)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    optimizer = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": lr / 10},
            {"params": model[1].parameters(), "lr": lr},
        ],
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-4,
    )
    return model, optimizer


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    generator = torch.Generator().manual_seed(step)
    x = torch.randn(8, 4, generator=generator)
    optimizer.zero_grad()
    model(x).square().mean().backward()
    optimizer.step()


def test_scheduler_sets_both_groups_with_trunk_at_one_tenth() -> None:
    lr, decay = 1e-2, 10
    model, optimizer = _two_group_sgd(lr)
    scheduler = inverse_decay_scheduler(optimizer, gamma=10.0, power=0.75, decay_steps=decay)
    for step in range(15):  # crosses T_decay = 10
        trunk_lr, head_lr = (group["lr"] for group in optimizer.param_groups)
        factor = InverseDecay(10.0, 0.75, decay)(step)
        assert head_lr == pytest.approx(lr * factor, rel=1e-12)
        assert trunk_lr == pytest.approx(lr / 10 * factor, rel=1e-12)
        _train_step(model, optimizer, step)
        scheduler.step()
    assert optimizer.param_groups[1]["lr"] == pytest.approx(lr * 11.0**-0.75, rel=1e-12)


def test_scheduler_state_dict_resumes_exactly() -> None:
    lr, total, cut = 1e-2, 15, 7

    model, optimizer = _two_group_sgd(lr)
    scheduler = inverse_decay_scheduler(optimizer, gamma=10.0, power=0.75, decay_steps=10)
    for step in range(total):
        _train_step(model, optimizer, step)
        scheduler.step()

    first, first_opt = _two_group_sgd(lr)
    first_sched = inverse_decay_scheduler(first_opt, gamma=10.0, power=0.75, decay_steps=10)
    for step in range(cut):
        _train_step(first, first_opt, step)
        first_sched.step()
    saved = (first.state_dict(), first_opt.state_dict(), first_sched.state_dict())

    # A fresh run built with other schedule arguments: the saved state wins.
    resumed, resumed_opt = _two_group_sgd(lr)
    resumed_sched = inverse_decay_scheduler(resumed_opt, gamma=1.0, power=2.0, decay_steps=3)
    resumed.load_state_dict(saved[0])
    resumed_opt.load_state_dict(saved[1])
    resumed_sched.load_state_dict(saved[2])
    assert resumed_sched.lr_lambdas[0] == InverseDecay(10.0, 0.75, 10)
    for step in range(cut, total):
        _train_step(resumed, resumed_opt, step)
        resumed_sched.step()

    assert [g["lr"] for g in resumed_opt.param_groups] == [g["lr"] for g in optimizer.param_groups]
    for a, b in zip(resumed.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------- clustering schedule

TOTAL = 1000
START = 0.2  # on from step 200; q = 0.5 at step 600


def test_ramp_names() -> None:
    assert CLUSTER_RAMPS == ("sigmoid", "linear", "step")


@pytest.mark.parametrize("ramp", CLUSTER_RAMPS)
def test_zero_before_start(ramp: str) -> None:
    for step in (0, 1, 100, 199):
        assert clustering_schedule(step, TOTAL, START, ramp) == 0.0


def test_values_at_start() -> None:
    assert clustering_schedule(200, TOTAL, START, "sigmoid") == pytest.approx(0.0, abs=1e-12)
    assert clustering_schedule(200, TOTAL, START, "linear") == pytest.approx(0.0, abs=1e-12)
    assert clustering_schedule(200, TOTAL, START, "step") == 1.0


def test_values_half_way_and_at_end() -> None:
    gamma = 10.0
    assert clustering_schedule(600, TOTAL, START, "linear") == pytest.approx(0.5, rel=1e-9)
    assert clustering_schedule(600, TOTAL, START, "sigmoid", gamma) == pytest.approx(
        2.0 / (1.0 + math.exp(-5.0)) - 1.0, rel=1e-9
    )
    assert clustering_schedule(600, TOTAL, START, "step") == 1.0
    assert clustering_schedule(TOTAL, TOTAL, START, "linear") == pytest.approx(1.0)
    assert clustering_schedule(TOTAL, TOTAL, START, "sigmoid", gamma) == pytest.approx(math.tanh(gamma / 2))


def test_sigmoid_gamma_controls_steepness() -> None:
    slow = clustering_schedule(400, TOTAL, START, "sigmoid", gamma=2.0)
    fast = clustering_schedule(400, TOTAL, START, "sigmoid", gamma=20.0)
    assert 0.0 < slow < fast < 1.0


@pytest.mark.parametrize("ramp", CLUSTER_RAMPS)
@pytest.mark.parametrize("start", [0.0, 0.2, 0.9])
def test_monotone_and_bounded(ramp: str, start: float) -> None:
    values = [clustering_schedule(step, TOTAL, start, ramp) for step in range(0, TOTAL + 200, 7)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b for a, b in zip(values, values[1:]))
    # q is clamped: past the end the weight stays at its final value
    assert clustering_schedule(TOTAL + 500, TOTAL, start, ramp) == clustering_schedule(TOTAL, TOTAL, start, ramp)


def test_start_zero_ramps_from_first_step() -> None:
    assert clustering_schedule(0, TOTAL, 0.0, "linear") == 0.0
    assert clustering_schedule(500, TOTAL, 0.0, "linear") == pytest.approx(0.5)
    assert clustering_schedule(0, TOTAL, 0.0, "step") == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ramp": "cosine"}, "unknown cluster ramp"),
        ({"start": 1.0}, "start"),
        ({"start": -0.1}, "start"),
        ({"total_steps": 0}, "total_steps"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"step": 10, "total_steps": TOTAL, "start": START, "ramp": "linear"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        clustering_schedule(**args)  # type: ignore[arg-type]


# ---------------------------------------------------------------- alignment warm-up


def test_mfsan_warmup_is_the_ramp_released_train_py_computes() -> None:
    # α = 2/(1 + e^(−10p)) − 1 at p = t/T, worked by hand: p = 0.1 → 2/(1 + e^−1) − 1.
    assert alignment_warmup(0, 500, "mfsan") == 0.0
    assert alignment_warmup(50, 500, "mfsan") == pytest.approx(2 / (1 + math.exp(-1)) - 1)
    assert alignment_warmup(100, 500, "mfsan") == pytest.approx(math.tanh(1.0))
    assert alignment_warmup(500, 500, "mfsan") == pytest.approx(math.tanh(5.0))
    assert alignment_warmup(700, 500, "mfsan") == pytest.approx(math.tanh(5.0))  # past the end: held
    assert all(alignment_warmup(t, 500, "none") == 1.0 for t in (0, 50, 500))
    with pytest.raises(ValueError, match="warm-up"):
        alignment_warmup(0, 500, "linear")


def test_release_constant_cluster_weight_is_the_step_ramp_from_step_zero() -> None:
    # The released code weighs L_cid by the constant hyper_inter: r ≡ 1 from the first step.
    assert all(clustering_schedule(t, 500, 0.0, "step") == 1.0 for t in (0, 1, 250, 500))
