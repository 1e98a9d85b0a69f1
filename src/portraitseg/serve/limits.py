"""The limits of ``portraitseg serve``: one dataclass, the defaults documented on its fields."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from portraitseg.config import DEFAULT_MAX_PIXELS

#: The server's default address: loopback only (``--host 0.0.0.0`` to serve the network).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8750


@dataclass(frozen=True)
class ServeLimits:
    """What one server accepts and how much work it takes on at once.

    Attributes:
        max_upload_bytes: the largest request body (upload) accepted; larger ones get 413.
            Default 25 MiB (a 50 MP JPEG straight from a camera is ~20-30 MB).
        max_pixels: the largest photo decoded (width x height); larger ones, decompression
            bombs included, get 413 before their pixels are decoded. Default: the project's
            one limit, :data:`portraitseg.config.DEFAULT_MAX_PIXELS`.
        workers: renders run at once (threads sharing the one loaded model). Default 1: a
            render already uses every core.
        queue: renders accepted to wait beyond those being rendered; when ``workers + queue``
            are taken, a request gets 503 with ``Retry-After``. Default 4.
        timeout: seconds a client has to send its whole request body; a slower upload gets
            408. Default 30.
        quality: JPEG quality of the portraits, 1-100. Default 92.
        cache: pipelines kept for distinct (preset, overrides, keep, subject) choices; they
            share the loaded model, so each costs a few kB. Default 8.
    """

    max_upload_bytes: int = 25 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int = 1
    queue: int = 4
    timeout: float = 30.0
    quality: int = 92
    cache: int = 8

    def __post_init__(self) -> None:
        lowest = {"max_upload_bytes": 1, "max_pixels": 1, "workers": 1, "queue": 0, "quality": 1, "cache": 1}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "timeout":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                        math.isfinite(value) and value > 0):
                    raise ValueError(f"timeout={value!r} must be a finite number of seconds > 0")
                continue
            low = lowest[item.name]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{item.name}={value!r} must be an integer >= {low}")
        if self.quality > 100:
            raise ValueError(f"quality={self.quality!r} must be in 1..100")

    @property
    def capacity(self) -> int:
        """Renders taken on at once: being rendered plus waiting."""
        return self.workers + self.queue
