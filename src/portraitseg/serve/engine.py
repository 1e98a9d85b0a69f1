"""The server's model and render queue.

The model is loaded once (:meth:`Engine.load`). A request's preset, overrides, kept classes and
subject need their own :class:`~portraitseg.pipeline.PortraitPipeline`, but not their own model:
:meth:`Engine.pipeline_for` builds a light pipeline around the loaded segmenter, person model and
face finder and keeps a few (least recently used dropped). Renders run on a fixed number of worker
threads; :class:`RenderQueue` takes at most ``workers + queue`` jobs and refuses the next one
(the API answers 503), so a burst of requests never starts unbounded threads or work.
"""

from __future__ import annotations

import io
import os
import queue
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from portraitseg.classes import CLASS_NAMES
from portraitseg.io import InputError, Photo, encode_image, read_photo
from portraitseg.pipeline import PipelineError, PortraitPipeline, render_preset, to_uint8
from portraitseg.serve.limits import ServeLimits
from portraitseg.serve.options import ApiError, RenderOptions

#: How the upload is named in messages (its temporary file's name means nothing to the client).
UPLOAD = "the upload"


class QueueFull(Exception):
    """Every render slot is taken (rendering or waiting)."""


class RenderQueue:
    """``workers`` threads taking jobs in order; at most ``capacity`` jobs in the queue or running."""

    def __init__(self, workers: int, capacity: int) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future] | None] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(capacity)
        self._lock = threading.Lock()
        self._taken = 0
        self._threads = [threading.Thread(target=self._work, name=f"portraitseg-render-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    @property
    def length(self) -> int:
        """Jobs rendering or waiting."""
        return self._taken

    def submit(self, job: Callable[[], Any]) -> Future:
        """Queue ``job``; raises :class:`QueueFull` when every slot is taken."""
        if not self._slots.acquire(blocking=False):
            raise QueueFull
        with self._lock:
            self._taken += 1
        future: Future = Future()
        self._jobs.put((job, future))
        return future

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            result, error = None, None
            if future.set_running_or_notify_cancel():
                try:
                    result = job()
                except BaseException as err:  # noqa: BLE001 - handed to the request that waits for it
                    error = err
            with self._lock:  # the slot is free before the waiting request hears of the result
                self._taken -= 1
            self._slots.release()
            if error is not None:
                future.set_exception(error)
            elif future.running():
                future.set_result(result)

    def close(self) -> None:
        """Stop the workers once the queued jobs are done."""
        for _ in self._threads:
            self._jobs.put(None)


@dataclass
class Rendered:
    """A response body, its media type and the pipeline's notes (a focus on no person...)."""

    body: bytes
    media_type: str
    notes: list[str]


def decode_upload(data: bytes, max_pixels: int) -> Photo:
    """The photo of an upload (:func:`portraitseg.io.read_photo`: EXIF orientation, colour
    profile, transparency); its size is read from the header and checked before any pixel is
    decoded.

    Raises:
        ApiError: 400 not an image, corrupt or truncated; 413 over ``max_pixels``.
    """
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ApiError(400, "the upload is not an image (or a format Pillow cannot read): send a "
                            "JPEG, PNG, WebP, BMP, TIFF or GIF photo") from None
    if width * height > max_pixels:
        raise ApiError(413, f"the photo is {width}x{height} = {width * height:,} pixels, over the "
                            f"server's limit of {max_pixels:,} (--max-pixels): send a smaller photo")
    with tempfile.TemporaryDirectory(prefix="portraitseg-serve-") as folder:
        path = os.path.join(folder, "upload")
        with open(path, "wb") as f:
            f.write(data)
        try:
            return read_photo(path, max_pixels)
        except InputError as err:
            raise ApiError(400, str(err).replace(path, UPLOAD)) from None


class Engine:
    """The loaded pipeline, its per-option variants and the render queue."""

    def __init__(self, base: PortraitPipeline, limits: ServeLimits, model: str = "default",
                 preset: str = "disc") -> None:
        self.base, self.limits, self.model, self.preset = base, limits, model, preset
        self.class_names = CLASS_NAMES if base.helen else tuple(str(i) for i in range(base.classes))
        self._pipelines: OrderedDict[tuple, PortraitPipeline] = OrderedDict()
        self._lock = threading.Lock()
        self.queue = RenderQueue(limits.workers, limits.capacity)

    @classmethod
    def load(cls, model: str | os.PathLike = "default", preset: str = "disc",
             limits: ServeLimits | None = None, device: str | None = None,
             threads: int | None = None) -> Engine:
        """Load ``model`` once (:meth:`PortraitPipeline.from_pretrained`) with ``preset``."""
        limits = limits or ServeLimits()
        base = PortraitPipeline.from_pretrained(model, preset, device, threads=threads,
                                                max_pixels=limits.max_pixels)
        return cls(base, limits, str(model), preset)

    def pipeline_for(self, options: RenderOptions) -> PortraitPipeline:
        """The pipeline of ``options``' preset, overrides, keep and subject, around the loaded
        model (built on first use, a few kept)."""
        key = options.pipeline_key
        with self._lock:
            if key in self._pipelines:
                self._pipelines.move_to_end(key)
                return self._pipelines[key]
        try:
            renderer = render_preset(options.preset, **dict(options.overrides))
        except (PipelineError, ValueError) as err:  # the renderer's own checks of the values
            raise ApiError(400, f"preset={options.preset!r} with these options: {err}") from None
        pipe = self.base.with_options(renderer, subject=options.subject, keep=options.keep or self.base.keep,
                                      max_pixels=self.limits.max_pixels,
                                      people="all" if options.all_people else "main")
        with self._lock:
            self._pipelines[key] = pipe
            while len(self._pipelines) > self.limits.cache:
                self._pipelines.popitem(last=False)
        return pipe

    def render(self, data: bytes, options: RenderOptions) -> Rendered:
        """Upload bytes -> the encoded portrait (or alpha); runs on a render worker."""
        import torch

        pipe = self.pipeline_for(options)
        photo = decode_upload(data, self.limits.max_pixels)
        with torch.inference_mode():
            image = torch.from_numpy(photo.rgb).to(pipe.device).permute(2, 0, 1)[None]
            try:
                result = pipe(image, focus=options.focus, dtype=torch.uint8)
            except PipelineError as err:  # e.g. a focus point outside the photo
                raise ApiError(400, str(err)) from None
            if options.alpha:
                return Rendered(encode_image("alpha.png", to_uint8(result.alpha[0, 0])), "image/png",
                                photo.notes + result.notes)
            portrait = result.portrait[0].permute(1, 2, 0).cpu().numpy()
        name = "portrait.png" if options.fmt == "PNG" else "portrait.jpg"
        body = encode_image(name, portrait, self.limits.quality, photo.icc_profile, photo.alpha)
        return Rendered(body, options.media_type, photo.notes + result.notes)

    def close(self) -> None:
        self.queue.close()
