"""LR schedules: linear warmup, then poly / cosine / constant, stepped once per optimizer step."""

from __future__ import annotations

import math

import pytest
import torch

from portraitseg.lit.schedules import warmup_schedule


def lrs(steps: int, **kwargs) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_schedule(opt, steps, **kwargs)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_is_linear_then_poly_decays_to_zero():
    out = lrs(14, name="poly", warmup_steps=4, power=1.0)
    assert out[:4] == pytest.approx([1 / 5, 2 / 5, 3 / 5, 4 / 5])
    assert out[4] == pytest.approx(1.0)
    assert out[4:] == pytest.approx([1 - t / 10 for t in range(10)])


def test_poly_power():
    out = lrs(10, name="poly", warmup_steps=0, power=0.9)
    assert out == pytest.approx([(1 - t / 10) ** 0.9 for t in range(10)])


def test_cosine_reaches_min_lr_ratio():
    out = lrs(20, name="cosine", warmup_steps=0, min_lr_ratio=0.1)
    expected = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / 20)) for t in range(20)]
    assert out == pytest.approx(expected)
    assert all(a >= b for a, b in zip(out, out[1:], strict=False))


def test_constant_after_warmup():
    assert lrs(6, name="constant", warmup_steps=2, min_lr_ratio=1.0) == pytest.approx(
        [1 / 3, 2 / 3, 1, 1, 1, 1])


def test_warmup_longer_than_training_is_clamped():
    out = lrs(3, name="poly", warmup_steps=100, power=1.0)
    assert all(0 < v <= 1 for v in out)


def test_unknown_schedule_lists_known_names():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="unknown schedule 'step'; known: constant, poly, cosine"):
        warmup_schedule(opt, 10, name="step")
