"""``PortraitPipeline``: one tensor module from photo to portrait (two passes, subject, render).

The steps, all on tensors and on the photo's device (kornia style: pure functions below, the
module stores the options and calls them)::

    photo (B, 3, H, W) --pass 1: the model on the whole photo (long side = model size)-->
        person matte + coarse parse
    --faces: a face detector on the photo (MTCNN, :mod:`portraitseg.subject.faces`; or the
        connected components of the coarse parse's head classes), each face box squared in the
        HELEN* photos' framing--> pass 2: the model on each face crop (face size: the model's input size)
    --the fine parse pasted back softly (feathered crop borders) on the parse grid-->
    --subject alpha: max(person matte, P(kept)) * (1 - P(face classes not kept))-->
    --PortraitRenderer options: upsampled to the photo, guided-filter refined at full resolution,
        background blurred and composited--> portrait (B, 3, H, W), alpha (B, 1, H, W)

The render is :func:`portraitseg.render.fast.render_portrait_fast` (``fast=True``, default: the
smooth steps at reduced resolution, one fused full-resolution pass; 46-49 dB PSNR against the
reference on 1-12 MP photos) or the reference :func:`portraitseg.render.render_portrait`.

On an accelerator pass 2 reads nothing back to the host (``max_faces`` crops per photo, the ones
that are not faces weighted 0; on the CPU only real faces are parsed), except the face detector
(``faces="mtcnn"``: its cascade's shapes depend on the photo; ``faces="parse"`` does not). The
fallback ``subject="person_grabcut"`` and a separate ``person_model`` leave the tensors for
OpenCV (:mod:`portraitseg.subject.grabcut`).

Example::

    from portraitseg import PortraitPipeline
    pipe = PortraitPipeline.from_pretrained("default", render="disc")
    out = pipe(images)              # images (B, 3, H, W) in [0, 1] (or uint8), one size per batch
    out.portrait, out.alpha, out.parse
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from portraitseg.classes import CLASS_NAMES, FLIP_PERMUTATION, NUM_CLASSES
from portraitseg.config import DEFAULT_MAX_PIXELS, DEFAULT_MODEL_SIZE
from portraitseg.inputs import PipelineError, stack_images
from portraitseg.models.inference import segment_letterboxed
from portraitseg.presets import render_preset
from portraitseg.render.alpha import check_range
from portraitseg.render.fast import render_portrait_fast, store_rows
from portraitseg.sizing import as_float
from portraitseg.subject.alpha import class_masks, parse_alpha, render_parse
from portraitseg.subject.crops import crop_faces, frame_faces, paste_faces
from portraitseg.subject.faces import MIN_FACE, FaceFinder
from portraitseg.subject.heads import MAX_FACES, face_squares, find_heads, label_regions
from portraitseg.subject.options import check_choices, check_keep, check_max_pixels, check_sizes
from portraitseg.subject.passes import two_pass_parse
from portraitseg.subject.people import Focus, PeopleError, select_people
from portraitseg.viz import to_uint8

#: What a portrait keeps sharp: ``person`` (the learned person matte; a model without a person
#: head falls back to ``person_grabcut``), ``person_grabcut`` (the face parse extended to the body
#: by GrabCut, :func:`portraitseg.subject.grabcut.person_alpha`) or ``face`` (the kept parsed
#: classes only, the paper).
PIPELINE_SUBJECTS = ("person", "person_grabcut", "face")
#: Long side of the grid the fine parse is pasted on and the subject alpha built on (photos
#: smaller than it keep their size); the renderer upsamples the alpha to the photo and refines it
#: there with its guided filter, which itself solves at ``1 / subsample`` of the photo.
PARSE_SIZE = 1024


@dataclass
class PortraitResult:
    """What :meth:`PortraitPipeline.forward` returns.

    Attributes:
        portrait: ``(B, 3, H, W)`` in [0, 1], the photo's size, dtype float32.
        alpha: ``(B, 1, H, W)`` in [0, 1], the subject alpha the render used (1 = kept sharp).
        parse: class probabilities ``(B, K, h, w)`` on the parse grid (long side
            ``min(parse_size, max(H, W))``): pass 1 with the face crops of pass 2 pasted in.
        person: person-matte probability ``(B, 1, h1, w1)`` at pass-1 resolution, or ``None``
            (no person head).
        faces: ``(B, M, 4)`` face crops ``x0, y0, x1, y1`` in photo pixels (squares).
        face_used: ``(B, M)`` bool, the crops that were parsed and pasted back.
        notes: warnings for the caller to show (fallbacks taken, e.g. GrabCut found no face).
    """

    portrait: torch.Tensor
    alpha: torch.Tensor
    parse: torch.Tensor
    person: torch.Tensor | None
    faces: torch.Tensor
    face_used: torch.Tensor
    notes: list[str] = field(default_factory=list)


class PortraitPipeline(nn.Module):
    """Segmenter + subject + :class:`~portraitseg.render.PortraitRenderer`: photo -> portrait.

    Args:
        segmenter: a :class:`~portraitseg.models.Segmenter` (``segment`` gives the person matte
            of a two-output model) or any ``image -> logits`` network, ``K`` classes.
        renderer: the render (its ``keep``, ``subject`` and ``person`` options are the defaults).
        subject: ``person`` | ``person_grabcut`` | ``face`` (:data:`PIPELINE_SUBJECTS`; default:
            the renderer's). ``person`` without a person head (and without ``person_model``)
            falls back to ``person_grabcut`` for a Helen parser, to ``face`` otherwise, with a
            note in :attr:`notes`.
        keep: kept class ids (default: the renderer's).
        tta: flip-average both passes.
        model_size: pass-1 long side (default :data:`DEFAULT_MODEL_SIZE`).
        face_pass: run pass 2 (Helen parsers only).
        face_size: side of pass 2's face crops (default: ``model_size``, the scale the model saw
            the HELEN* faces at in training: their 256 px photos letterboxed to its input size).
        max_faces, parse_size: see :data:`MAX_FACES`, :data:`PARSE_SIZE`.
        person_model: a separate 2-class person segmenter (its mask replaces the matte);
            ``person_model_size``: its input size.
        class_names: the segmenter's classes (default: Helen's when ``K == 11``).
        fast: render with :func:`portraitseg.render.fast.render_portrait_fast` (else the reference).
        sync_free: pass 2 without reading anything back to the host (all ``max_faces`` crops
            parsed, unused ones weighted 0); default (None): on accelerators only.
        faces: how pass 2 finds faces (:data:`~portraitseg.subject.options.FACE_FINDERS`):
            ``mtcnn`` (default) or ``parse``.
        min_face: the smallest face ``mtcnn`` finds (face-box width, photo pixels, >= 12);
            smaller faces are left to pass 1.
        max_pixels: refuse photos of more than this many pixels (default: the project's one
            limit, :data:`portraitseg.config.DEFAULT_MAX_PIXELS`; ``None``: no limit).
        people: who stays sharp without a focus: ``main`` (the main subjects, default) or ``all``
            (every person; :mod:`portraitseg.subject.people`).
        face_finder: the ``mtcnn`` finder to use, e.g. another pipeline's (default: a new one).
    """

    def __init__(
        self,
        segmenter: nn.Module,
        renderer: nn.Module,
        *,
        subject: str | None = None,
        keep: Sequence[int] | None = None,
        tta: bool = False,
        model_size: int = DEFAULT_MODEL_SIZE,
        face_pass: bool = True,
        face_size: int | None = None,
        max_faces: int = MAX_FACES,
        parse_size: int = PARSE_SIZE,
        person_model: nn.Module | None = None,
        person_model_size: int = DEFAULT_MODEL_SIZE,
        class_names: Sequence[str] | None = None,
        fast: bool = True,
        sync_free: bool | None = None,
        faces: str = "mtcnn",
        min_face: float = MIN_FACE,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        people: str = "main",
        face_finder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        check_choices(people, faces, min_face)
        self.people, self.faces = people, faces
        self.max_pixels = check_max_pixels(max_pixels)
        self.fast = bool(fast)
        self.sync_free = sync_free
        self.segmenter = segmenter
        self.renderer = renderer
        self.person_model = person_model
        classes = int(getattr(segmenter, "classes", 0) or len(class_names or ()) or NUM_CLASSES)
        self.classes = classes
        if class_names is None:
            class_names = CLASS_NAMES if classes == NUM_CLASSES else ()
        names = list(class_names)
        self.class_names = tuple(names) or None
        self.helen = names == list(CLASS_NAMES)
        self.person_head = bool(getattr(segmenter, "person_head", False))
        sizes = check_sizes(model_size=model_size, face_size=model_size if face_size is None else face_size,
                            parse_size=parse_size, max_faces=max_faces, person_model_size=person_model_size)
        self.model_size, self.face_size = sizes["model_size"], sizes["face_size"]
        self.parse_size, self.max_faces = sizes["parse_size"], sizes["max_faces"]
        self.person_model_size = sizes["person_model_size"]
        self.tta = bool(tta)
        self.face_pass = bool(face_pass) and self.helen
        if face_finder is None and faces == "mtcnn" and self.helen:
            face_finder = FaceFinder(min_face=min_face)
        self.face_finder = face_finder if faces == "mtcnn" and self.helen else None
        self.keep = check_keep(renderer.keep if keep is None else keep, classes)
        #: warnings about the set-up (subject fallbacks); the CLI prints them once
        self.notes: list[str] = []
        self.subject = self._resolve_subject(subject or getattr(renderer, "subject", "person"))
        self.person_options = dict(getattr(renderer, "person", {}) or {})

        kept, dropped = class_masks(self.keep, classes)
        self.register_buffer("kept", torch.from_numpy(kept), persistent=False)
        self.register_buffer("dropped", torch.from_numpy(dropped), persistent=False)
        head = torch.zeros(classes, dtype=torch.bool)
        head[1:] = True
        self.register_buffer("head", head, persistent=False)
        perm = torch.tensor(FLIP_PERMUTATION) if self.helen else torch.arange(classes)
        self.register_buffer("flip_perm", perm, persistent=False)

    def _resolve_subject(self, subject: str) -> str:
        if subject not in PIPELINE_SUBJECTS:
            raise PipelineError(f"subject={subject!r}: choose one of {', '.join(PIPELINE_SUBJECTS)}")
        if subject == "person" and not self.person_head and self.person_model is None:
            subject = "person_grabcut"
        if subject == "person_grabcut" and not self.helen:
            self.notes.append("the model is not a Helen face parser; rendering the kept classes as the "
                              "subject (--subject face)")
            return "face"
        return subject

    @property
    def device(self) -> torch.device:
        """The device of the segmenter's parameters (CPU for a parameter-free net)."""
        return next(iter(self.segmenter.parameters()), torch.empty(0)).device

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike = "default",
        render: str | nn.Module = "disc",
        device: str | torch.device | None = None,
        *,
        render_options: dict[str, Any] | None = None,
        keep: str | Sequence[int | str] | None = None,
        person_model: str | os.PathLike | None = None,
        threads: int | None = None,
        **options: Any,
    ) -> PortraitPipeline:
        """Load a model file and a render preset into a pipeline (eval mode, on ``device``): the
        one builder of the render path (the CLI, the benchmarks and Python programs use it).

        The bundled model loads from its TorchScript artifact with PyTorch alone
        (:mod:`portraitseg.models.inference`); the thread count is set for the usable cores
        (:func:`portraitseg.runtime.configure_threads`).

        Args:
            model: ``"default"`` (the bundled model), a checkpoint written by ``python train.py``
                or a weights file exported from one.
            render: a preset name of ``conf/render/`` (``disc``, ``gaussian``, ``halo_free``) or a
                :class:`~portraitseg.render.PortraitRenderer`.
            device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
            render_options: values replacing the preset's (``strength``, ``falloff``, ...).
            keep: kept classes: ids, or names of the model's classes (``"hair,skin"``; Helen
                groups too); default: the renderer's for a Helen parser, else all but background.
            person_model: a 2-class person segmenter's model file (its mask replaces the matte).
            threads: intra-op threads (default: one per usable core, unless already chosen).
            options: the other arguments of :class:`PortraitPipeline` (``model_size`` defaults to
                the model's training size).

        Raises:
            FileNotFoundError: ``model`` does not exist (or no bundled model), naming the path.
            portraitseg.models.checkpoint.CheckpointError: the file is not a portraitseg model
                (it says what it is and what was expected).
            PipelineError: unknown preset, option or class.
        """
        from portraitseg.pretrained import pretrained_parts

        net, renderer, options = pretrained_parts(model, render, render_options, keep, person_model, threads,
                                                  options)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(net.eval(), renderer, **options).to(torch.device(device)).eval()

    def with_options(self, renderer: nn.Module | None = None, **options: Any) -> PortraitPipeline:
        """A pipeline sharing this one's networks (segmenter, face finder, person model) with other
        options: ``renderer`` and any argument of :class:`PortraitPipeline` (``subject``, ``keep``,
        ``people``, ``max_pixels``...; the others as here). Cheap: nothing is loaded (a server's
        per-request options)."""
        current = {"subject": self.subject, "keep": self.keep, "tta": self.tta, "model_size": self.model_size,
                   "face_pass": self.face_pass, "face_size": self.face_size, "max_faces": self.max_faces,
                   "parse_size": self.parse_size, "person_model": self.person_model,
                   "person_model_size": self.person_model_size, "class_names": self.class_names,
                   "fast": self.fast, "sync_free": self.sync_free, "faces": self.faces,
                   "face_finder": self.face_finder, "max_pixels": self.max_pixels, "people": self.people}
        if renderer is not None and "keep" not in options:
            current["keep"] = None  # the new renderer's
        clone = type(self)(self.segmenter, renderer if renderer is not None else self.renderer,
                           **{**current, **options})
        return clone.to(self.device).eval()

    # ---- the passes

    def parse(
        self, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Both passes: ``image (B, 3, H, W)`` in [0, 1] -> ``(parse (B, K, h, w) on the parse
        grid, person (B, 1, h1, w1) or None, faces (B, M, 4), face_used (B, M))``."""
        return two_pass_parse(self.segmenter, image, model_size=self.model_size, parse_size=self.parse_size,
                              face_size=self.face_size, max_faces=self.max_faces, flip_perm=self.flip_perm,
                              head=self.head, face_pass=self.face_pass, face_finder=self.face_finder,
                              tta=self.tta, sync_free=self.sync_free)

    def subject_alpha(
        self, image: torch.Tensor, parse: torch.Tensor, person: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[str]]:
        """Subject alpha ``(B, 1, h, w)`` (any grid; the renderer upsamples it) and notes."""
        if self.subject == "face":
            return parse_alpha(parse, None, self.kept, self.dropped, "face"), []
        if self.person_model is not None:
            from portraitseg.subject.person_model import person_alpha_from_model

            work = {k: v for k, v in self.person_options.items() if k == "work_size"}
            return person_alpha_from_model(as_float(image), self.person_model, parse, self.keep,
                                           input_size=self.person_model_size, **work)
        if self.subject == "person_grabcut" or person is None:
            from portraitseg.subject.grabcut import person_alpha

            return person_alpha(as_float(image), parse, self.keep, **self.person_options)
        return parse_alpha(parse, person, self.kept, self.dropped, "person"), []

    def choose_people(
        self, alpha: torch.Tensor, person: torch.Tensor | None, faces: torch.Tensor, photo: tuple[int, int],
        focus: Focus | Sequence[Focus | None] | None = None,
    ) -> tuple[torch.Tensor, list[str]]:
        """The subject alpha with the people not chosen taken out: the one at ``focus``, else the
        ``people`` rule (:func:`~portraitseg.subject.people.select_people`); and notes.

        Raises:
            PipelineError: a malformed ``focus``.
        """
        try:
            return select_people(alpha, person, faces, photo, focus, self.people)
        except PeopleError as err:
            raise PipelineError(str(err)) from None

    def render(
        self, image: torch.Tensor, alpha: torch.Tensor, in_place: bool = False,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The render step: ``image (B, 3, H, W)`` (float in [0, 1], or uint8) + ``alpha (B, 1, h,
        w)`` (any grid) -> ``(portrait (B, 3, H, W), alpha (B, 1, H, W))`` with the renderer's
        options; with ``in_place`` (a float photo) the portrait overwrites ``image``, with ``out``
        (float32 or uint8, :func:`~portraitseg.render.fast.render_portrait_fast`) it goes there."""
        out = image if in_place and out is None else out
        if not self.fast:
            portrait, alpha = self.renderer(as_float(image), alpha=alpha)
            return (portrait, alpha) if out is None else (store_rows(out, slice(None), portrait), alpha)
        check_range(alpha, "alpha")
        return render_portrait_fast(image, alpha, **self.renderer.options, out=out)

    def forward(
        self, images: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
        focus: Focus | Sequence[Focus | None] | None = None, *, dtype: torch.dtype = torch.float32,
    ) -> PortraitResult:
        """Photos -> portraits (inference only: runs under ``torch.inference_mode``).

        Args:
            images: ``(B, 3, H, W)`` tensors on the pipeline's device, numpy ``(H, W, 3)`` /
                ``(B, H, W, 3)`` photo arrays (moved to it), or a list of either of one size;
                uint8, uint16 or float in [0, 1] (see :func:`stack_images`).
            focus: the person kept sharp (all others blurred): a point ``(x, y)`` for a batch of
                one, or a list of points (or None) per photo; ints and floats over 1 are photo
                pixels, floats in [0, 1] fractions of the width and height
                (:func:`portraitseg.argtypes.parse_focus` reads ``"X,Y"``). A point on no person:
                a note, and the ``people`` default. None: the ``people`` default.
            dtype: the portrait's: ``torch.float32`` in [0, 1], or ``torch.uint8`` (0-255, the
                values :func:`~portraitseg.viz.to_uint8` gives, channels-last:
                ``portrait.permute(0, 2, 3, 1)`` is a contiguous ``(B, H, W, 3)`` photo array).
                uint8 photos rendered to uint8 on the CPU are never converted to float in full
                (a 12 MP photo: 144 MB less).

        Returns:
            :class:`PortraitResult`.

        Raises:
            PipelineError: naming the image and the fix: no images, mixed sizes, a shape, channel
                count or dtype that is not a photo, NaN/inf or out-of-range pixels, a photo over
                ``max_pixels``, tensors on another device, a malformed ``focus``, another ``dtype``.
        """
        if dtype not in (torch.float32, torch.uint8):
            raise PipelineError(f"dtype={dtype}: the portrait is torch.float32 (0-1) or torch.uint8 (0-255)")
        with torch.inference_mode():
            uint8 = dtype == torch.uint8 and self.fast and self.device.type == "cpu"
            image = stack_images(images, self.max_pixels, self.device, keep_uint8=uint8)
            if image.device != self.device:
                raise PipelineError(
                    f"images are on {image.device} but the pipeline is on {self.device}; move them "
                    f"with images.to({str(self.device)!r}) (or the pipeline with .to())")
            parse, person, faces, used = self.parse(image)
            alpha, notes = self.subject_alpha(image, parse, person)
            alpha, chosen = self.choose_people(alpha, person, faces, tuple(image.shape[-2:]), focus)
            notes = [*notes, *chosen]
            out = None
            if dtype == torch.uint8:
                b, _, h, w = image.shape
                out = torch.empty(b, h, w, 3, dtype=torch.uint8, device=image.device).permute(0, 3, 1, 2)
            # a photo converted here (uint8, a list) is ours: the portrait may overwrite it
            owned = not isinstance(images, torch.Tensor) or image.data_ptr() != images.data_ptr()
            portrait, alpha = self.render(image, alpha.float(), in_place=owned and image.is_floating_point(),
                                          out=out)
        return PortraitResult(portrait, alpha, parse, person, faces, used, list(notes))

    def extra_repr(self) -> str:
        return (f"subject={self.subject!r}, keep={self.keep}, tta={self.tta}, model_size={self.model_size}, "
                f"face_pass={self.face_pass}, face_size={self.face_size}, parse_size={self.parse_size}, "
                f"fast={self.fast}, people={self.people!r}")


__all__ = ["PIPELINE_SUBJECTS", "PipelineError", "PortraitPipeline", "PortraitResult", "crop_faces",
           "face_squares", "frame_faces", "find_heads", "label_regions", "paste_faces", "render_parse",
           "render_preset", "segment_letterboxed", "stack_images", "to_uint8"]
