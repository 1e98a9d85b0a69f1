"""Thread settings of the render path: usable cores, the wait policy, a user's own choice kept."""

from __future__ import annotations

import os

import pytest
import torch

from portraitseg import runtime


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_usable_cores_follow_affinity_and_quota(tmp_path, monkeypatch):
    assert runtime.usable_cores() == len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("50000 100000\n")  # half a core -> 1
    monkeypatch.setattr(runtime, "CGROUP_CPU_MAX", quota)
    assert runtime.usable_cores() == 1
    quota.write_text("max 100000\n")
    assert runtime.usable_cores() == len(os.sched_getaffinity(0))


def test_passive_wait_unless_set(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    runtime.prefer_passive_wait()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    runtime.prefer_passive_wait()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_configure_threads_keeps_a_user_choice(monkeypatch, restore_threads):
    assert runtime.configure_threads(1) == 1 and torch.get_num_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    # 1 differs from the default (one per core of the affinity mask) on a multi-core machine:
    # a count set with torch.set_num_threads stays
    if len(os.sched_getaffinity(0)) > 1:
        assert runtime.configure_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert runtime.configure_threads() == torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="threads=0"):
        runtime.configure_threads(0)


def test_configure_threads_uses_the_quota(tmp_path, monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)  # PyTorch's default
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")
    monkeypatch.setattr(runtime, "CGROUP_CPU_MAX", quota)
    assert runtime.configure_threads() == 1 and torch.get_num_threads() == 1
