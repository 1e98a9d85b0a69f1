"""Threads of the render path, chosen for the cores this process may use.

Two settings matter on a CPU, most of all on a machine that another process keeps busy:

- the OpenMP wait policy: PyTorch's idle OpenMP threads spin for a while by default, so a thread
  that shares its core with another process burns the time the others wait for it;
  ``OMP_WAIT_POLICY=PASSIVE`` makes them sleep. OpenMP reads it once, when PyTorch is imported:
  :func:`prefer_passive_wait` sets it in the environment and must run before ``import torch``
  (the ``portraitseg render`` command does; in a Python program, set the variable before importing
  PyTorch);
- the intra-op thread count: one per usable core (:func:`usable_cores`: the CPU affinity mask,
  and a cgroup CPU quota where one is set, which PyTorch's default does not see).

:func:`configure_threads` applies the count (the CLI calls it, and so does
:meth:`portraitseg.PortraitPipeline.from_pretrained`); a count the user chose (``--threads``,
``OMP_NUM_THREADS``, or ``torch.set_num_threads`` before the pipeline is built) is kept.
This module imports PyTorch only inside :func:`configure_threads`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

#: the cgroup v2 file holding ``"<quota> <period>"`` (or ``"max <period>"``) of this process
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, lowered to a cgroup CPU quota if any."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def prefer_passive_wait() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the variable is set; effective only before PyTorch is
    imported (a no-op afterwards, which is why callers run it first)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def configure_threads(threads: int | None = None) -> int:
    """Set PyTorch's intra-op thread count for the render path and return it.

    Args:
        threads: the count to use (e.g. ``--threads``). None: keep a count the user chose
            (``OMP_NUM_THREADS`` set, or ``torch.set_num_threads`` called so that the count
            differs from PyTorch's default, one per core of the affinity mask), else one per
            :func:`usable_cores`.

    Raises:
        ValueError: ``threads`` < 1.
    """
    import torch

    if threads is not None:
        if isinstance(threads, bool) or int(threads) != threads or threads < 1:
            raise ValueError(f"threads={threads!r} must be an integer >= 1")
        torch.set_num_threads(int(threads))
        return int(threads)
    current = torch.get_num_threads()
    try:
        default = len(os.sched_getaffinity(0))
    except AttributeError:
        default = os.cpu_count() or 1
    if os.environ.get("OMP_NUM_THREADS") or current != default:
        return current
    wanted = usable_cores()
    if wanted != current:
        torch.set_num_threads(wanted)
    return wanted


def side_by_side(threads: int | None = None) -> int:
    """Renders to run at once on the CPU: :func:`usable_cores` divided by the intra-op ``threads``
    each (default one). A render's many small operations parallelise poorly within it, so renders
    side by side on one thread each get more done a second than one at a time on all threads."""
    return max(1, usable_cores() // (threads or 1))


@contextlib.contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op thread count set to ``threads`` inside the block, restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["configure_threads", "intra_op_threads", "prefer_passive_wait", "side_by_side", "usable_cores"]
