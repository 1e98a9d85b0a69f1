"""PortraitPipeline: both passes, batching, subjects, loading, devices, CLI equivalence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_checkpoint
from portraitseg.classes import CLASS_NAMES, NUM_CLASSES
from portraitseg.cli.main import main
from portraitseg.io import read_image
from portraitseg.models.checkpoint import CheckpointError, export_weights
from portraitseg.pipeline import (
    PipelineError,
    PortraitPipeline,
    crop_faces,
    face_squares,
    find_heads,
    label_regions,
    paste_faces,
    render_parse,
    render_preset,
    to_uint8,
)

SKIN, HAIR = CLASS_NAMES.index("skin"), CLASS_NAMES.index("hair")
SKIN_RGB, HAIR_RGB, BODY_RGB, GREY = (0.2, 0.8, 0.2), (0.8, 0.2, 0.2), (0.2, 0.2, 0.8), (0.5, 0.5, 0.5)


class Oracle(torch.nn.Module):
    """A segmenter with a known answer: skin / hair / body by colour; the person matte covers all
    three. ``person_head=False`` drops the matte; ``classes=2`` is a person-vs-background model."""

    def __init__(self, person_head: bool = True, classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(60.0))
        self.person_head, self.classes = person_head, classes

    def _score(self, image: torch.Tensor, rgb: tuple[float, float, float]) -> torch.Tensor:
        ref = torch.tensor(rgb, device=image.device).view(1, 3, 1, 1)
        return 0.05 - ((image - ref) ** 2).mean(1)  # > 0 within ~0.22 of the colour

    def segment(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = torch.full((image.shape[0], self.classes, *image.shape[-2:]), -1.0, device=image.device)
        logits[:, 0] = 0.0
        skin, hair, body = (self._score(image, c) for c in (SKIN_RGB, HAIR_RGB, BODY_RGB))
        if self.classes == NUM_CLASSES:
            logits[:, SKIN], logits[:, HAIR] = skin, hair
        else:
            logits[:, 1] = torch.maximum(skin, hair)
        person = torch.maximum(torch.maximum(skin, hair), body)[:, None]
        return logits * self.scale, (person * self.scale if self.person_head else None)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.segment(image)[0]


def portrait_photo(h: int, w: int, head: int, top: int = 0, left: int = 0, seed: int = 0) -> torch.Tensor:
    """(3, h, w): textured grey background, a person: hair over a skin square of side ``head``
    (at ``top, left``) over a body twice as wide below it."""
    rng = np.random.default_rng(seed)
    img = np.asarray(GREY, np.float32)[:, None, None] + rng.uniform(-0.1, 0.1, (3, h, w)).astype(np.float32)
    hair = head // 3
    img[:, top : top + hair, left : left + head] = np.asarray(HAIR_RGB)[:, None, None]
    img[:, top + hair : top + head, left : left + head] = np.asarray(SKIN_RGB)[:, None, None]
    body_left = max(0, left - head // 2)
    body = np.asarray(BODY_RGB)[:, None, None]
    img[:, top + head : top + 3 * head, body_left : left + head + head // 2] = body
    return torch.from_numpy(img.clip(0, 1))


def pipeline(**options) -> PortraitPipeline:
    options.setdefault("model_size", 64)
    options.setdefault("faces", "parse")  # the oracle's colour-block heads are no faces to a face detector
    options.setdefault("face_size", 256)  # faces parsed at 4x the tiny pass 1
    return PortraitPipeline(Oracle(), render_preset("disc"), **options).eval()


# ---------------------------------------------------------------------------------------------
# the pure steps


def test_find_heads_largest_first_and_missing_slots_empty():
    probs = torch.zeros(1, NUM_CLASSES, 40, 60)
    probs[:, 0] = 1
    for (y0, y1, x0, x1, cls) in ((2, 8, 3, 9, SKIN), (20, 36, 30, 50, HAIR)):
        probs[:, :, y0:y1, x0:x1] = 0
        probs[:, cls, y0:y1, x0:x1] = 1
    head = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    head[1:] = True
    boxes, area = find_heads(probs, head, max_faces=3)
    assert boxes.shape == (1, 3, 4) and area.shape == (1, 3)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([30.0, 20, 50, 36]))
    torch.testing.assert_close(boxes[0, 1], torch.tensor([3.0, 2, 9, 8]))
    assert area[0].tolist() == [320.0, 36.0, 0.0]


def test_label_regions_matches_kornia():
    from kornia.contrib import connected_components

    mask = (torch.rand(2, 1, 40, 50, generator=torch.Generator().manual_seed(0)) > 0.55).float()
    ours = label_regions(mask, 60)
    theirs = connected_components(mask, num_iterations=60)
    theirs = (theirs - torch.arange(2).view(2, 1, 1, 1) * 40 * 50).clamp(min=0) * mask.long()  # per-image ids
    torch.testing.assert_close(ours.long(), theirs)


def test_face_squares_scale_to_the_photo_and_need_a_gain():
    boxes = torch.tensor([[[10.0, 10, 20, 30], [0, 0, 180, 180]]])
    squares, use = face_squares(boxes, torch.tensor([[150.0, 30000.0]]), (64, 64), (640, 640), face_size=256)
    torch.testing.assert_close(squares[0, 0], torch.tensor([150.0 - 140, 200 - 140, 150 + 140, 200 + 140]))
    assert use.tolist() == [[True, False]]  # a 252-px crop gains < 1.5x at 256 px


def test_crop_and_paste_round_trip():
    """A crop of a photo pasted back lands where it came from; outside the crop nothing changes."""
    yy, xx = torch.meshgrid(torch.arange(80.0), torch.arange(100.0), indexing="ij")
    image = torch.stack([xx / 100, yy / 80, (xx + yy) / 180])[None]  # linear: samples average exactly
    squares = torch.tensor([[[20.0, 10, 60, 50]]])
    crops = crop_faces(image, squares, 40)  # 1:1 scale
    torch.testing.assert_close(crops[0], image[0, :, 10:50, 20:60], atol=1e-5, rtol=0)
    coarse = torch.zeros(1, 3, 80, 100)
    pasted = paste_faces(coarse, crops.view(1, 1, 3, 40, 40), squares, torch.tensor([[True]]), (80, 100))
    torch.testing.assert_close(pasted[..., 25:35, 35:45], image[..., 25:35, 35:45], atol=1e-5, rtol=0)
    assert pasted[..., :10, :].abs().max() == 0 and pasted[..., :, 60:].abs().max() == 0
    windowed = paste_faces(coarse, crops.view(1, 1, 3, 40, 40), squares, torch.tensor([[True]]), (80, 100),
                           window=(8, 52, 18, 62))  # what the CPU path computes: the crops' window only
    torch.testing.assert_close(windowed, pasted, atol=1e-5, rtol=0)
    unused = paste_faces(coarse, crops.view(1, 1, 3, 40, 40), squares, torch.tensor([[False]]), (80, 100))
    assert unused.abs().max() == 0


# ---------------------------------------------------------------------------------------------
# the module


def test_outputs_shapes_and_batch_equals_one_by_one():
    pipe = pipeline()
    photos = [portrait_photo(96, 128, 30, 10, 40, seed=s) for s in (0, 1)]
    both = pipe(torch.stack(photos))
    assert both.portrait.shape == (2, 3, 96, 128) and both.alpha.shape == (2, 1, 96, 128)
    assert both.parse.shape == (2, NUM_CLASSES, 96, 128) and both.person.shape == (2, 1, 48, 64)
    torch.testing.assert_close(both.parse.sum(1), torch.ones(2, 96, 128))
    for i, photo in enumerate(photos):
        one = pipe(photo)  # (3, H, W) is a batch of one
        torch.testing.assert_close(one.portrait[0], both.portrait[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(one.alpha[0], both.alpha[i], atol=1e-5, rtol=0)
    as_list = pipe(photos)
    torch.testing.assert_close(as_list.portrait, both.portrait)


def test_mixed_sizes_bad_dtypes_and_devices_are_named():
    pipe = pipeline()
    with pytest.raises(PipelineError, match=r"mixed sizes.*#0 64x64, #1 64x80"):
        pipe([torch.rand(3, 64, 64), torch.rand(3, 64, 80)])
    with pytest.raises(PipelineError, match="float in"):
        pipe(torch.zeros(1, 3, 8, 8, dtype=torch.int32))
    with pytest.raises(PipelineError, match=r"4 channels \(RGBA\); the pipeline takes RGB"):
        pipe(torch.rand(1, 4, 8, 8))
    photo = (portrait_photo(64, 64, 24, 8, 20) * 255).round().byte()
    torch.testing.assert_close(pipe(photo).portrait, pipe(photo.float() / 255).portrait)
    with pytest.raises(PipelineError, match="keep="):
        pipeline(keep=(11,))
    with pytest.raises(PipelineError, match="subject="):
        pipeline(subject="body")
    if torch.cuda.is_available():
        with pytest.raises(PipelineError, match="are on cuda"):
            pipe(torch.rand(1, 3, 32, 32, device="cuda"))


def test_person_subject_keeps_the_body_and_selective_blurring_uses_the_parse():
    photo = portrait_photo(96, 96, 30, 6, 33)[None]
    person = pipeline()(photo).alpha[0, 0]
    face = pipeline(subject="face")(photo).alpha[0, 0]
    hair_only = pipeline(keep=(HAIR,))(photo).alpha[0, 0]
    body, skin, hair, bg = (slice(45, 60), slice(38, 58)), (slice(22, 32), slice(40, 56)), \
        (slice(7, 14), slice(40, 56)), (slice(0, 15), slice(82, 96))
    assert person[body].mean() > 0.9 and person[skin].mean() > 0.9 and person[bg].mean() < 0.2
    assert face[body].mean() < 0.1 and face[skin].mean() > 0.9
    assert hair_only[hair].mean() > 0.9 and hair_only[skin].mean() < 0.1 and hair_only[body].mean() > 0.9


def test_pass2_parses_small_faces_at_face_size():
    """A face 5 px long at pass 1 is parsed again at 256 px: its parse follows the photo."""
    big = 384
    photo = portrait_photo(big, big, 40, 60, 150)[None]
    truth = torch.zeros(big, big, dtype=torch.bool)
    truth[60:100, 150:190] = True  # hair + skin
    scores = {}
    for on in (True, False):
        out = pipeline(face_pass=on, model_size=48)(photo)
        pred = (out.parse[0].argmax(0) == SKIN) | (out.parse[0].argmax(0) == HAIR)
        scores[on] = float((pred & truth).sum() / (pred | truth).sum())
        assert out.face_used[0].tolist() == [on] + [False] * 7  # hair + skin: one head
        if on:
            x0, y0, x1, y1 = out.faces[0, 0].tolist()
            assert x0 < 150 and y0 < 60 and x1 > 190 and y1 > 100 and abs((x1 - x0) - (y1 - y0)) < 1e-3
            skin = out.parse[0, SKIN, 75:95, 155:185]
            assert skin.mean() > 0.9  # the fine parse, pasted back at the parse grid (the photo's)
    assert scores[True] > 0.9 and scores[True] > scores[False] + 0.05, scores


def test_fast_render_in_place_only_on_photos_it_owns():
    """A uint8 photo is converted by the pipeline, so the portrait overwrites that copy; a float
    photo is the caller's and stays untouched; both give the same portrait."""
    photo = torch.nn.functional.interpolate(portrait_photo(96, 128, 30, 10, 50)[None], size=(768, 1024),
                                            mode="bilinear", align_corners=False)
    photo8 = (photo * 255).round().byte()
    photo = photo8.float() / 255
    before = photo.clone()
    pipe = pipeline()
    from portraitseg.render.fast import work_factor

    assert work_factor(768, 1024, sigma=0.012 * 768, falloff=0.15, levels=4, radius=8, feather=0.0,
                       mode="halo_free") > 1  # the fast path runs here
    owned, caller = pipe(photo8), pipe(photo)
    torch.testing.assert_close(owned.portrait, caller.portrait)
    torch.testing.assert_close(photo, before, atol=0, rtol=0)


def test_uint8_portrait_of_a_uint8_photo_matches_the_float_render():
    """``dtype=torch.uint8``: the photo is read in bands as uint8 (never converted in full) and the
    portrait written as uint8, channels-last; the same values as the float portrait quantized by
    ``to_uint8``, and the caller's photo untouched. Large enough for several bands of the area
    resize (256 rows) and of the fused pass."""
    photo = torch.nn.functional.interpolate(portrait_photo(96, 128, 30, 10, 50)[None], size=(768, 1024),
                                            mode="bilinear", align_corners=False)
    photo8 = (photo * 255).round().byte()
    before = photo8.clone()
    pipe = pipeline()
    reference = pipe(photo8)
    out = pipe(photo8, dtype=torch.uint8)
    assert out.portrait.dtype == torch.uint8 and out.portrait.shape == (1, 3, 768, 1024)
    array = out.portrait[0].permute(1, 2, 0)
    assert array.is_contiguous()  # a photo array as it is
    diff = np.abs(array.numpy().astype(int) - to_uint8(reference.portrait[0]).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float summation order at rounding edges
    torch.testing.assert_close(out.alpha, reference.alpha, atol=1e-5, rtol=0)
    torch.testing.assert_close(photo8, before, atol=0, rtol=0)
    numpy_out = pipe(photo8[0].permute(1, 2, 0).numpy(), dtype=torch.uint8)  # an (H, W, 3) array
    torch.testing.assert_close(numpy_out.portrait, out.portrait, atol=0, rtol=0)
    floats = pipe(photo8.float() / 255, dtype=torch.uint8)  # float photo, uint8 portrait
    assert (floats.portrait.int() - out.portrait.int()).abs().max() <= 1
    with pytest.raises(PipelineError, match="dtype"):
        pipe(photo8, dtype=torch.float16)


def test_sync_free_pass2_equals_the_cpu_shortcut():
    """The accelerator path (every crop parsed, unused ones weighted 0, no read-back) gives what the
    CPU path (real faces only, pasted in their window) gives."""
    photos = torch.stack([portrait_photo(192, 256, 24, 40, 100, seed=1),
                          portrait_photo(192, 256, 20, 90, 20, seed=2)])
    cpu = pipeline(model_size=48)(photos)
    free = pipeline(model_size=48, sync_free=True)(photos)
    assert cpu.face_used.any()
    torch.testing.assert_close(free.parse, cpu.parse, atol=1e-4, rtol=0)  # float summation order
    torch.testing.assert_close(free.portrait, cpu.portrait, atol=1e-4, rtol=0)


def test_fallbacks_without_a_person_head():
    grabcut = PortraitPipeline(Oracle(person_head=False), render_preset("disc"), model_size=64)
    assert grabcut.subject == "person_grabcut" and grabcut.notes == []
    out = grabcut(portrait_photo(96, 96, 30, 6, 33))
    assert out.person is None and isinstance(out.notes, list)
    two = PortraitPipeline(Oracle(person_head=False, classes=2), render_preset("disc", keep=[1]),
                           model_size=64)
    assert two.subject == "face" and "not a Helen face parser" in two.notes[0]
    assert not two.face_pass
    assert two(portrait_photo(64, 64, 20, 4, 20)).alpha.shape == (1, 1, 64, 64)


def test_render_parse_is_the_pipeline_render_step():
    pipe = pipeline(people="all")  # render_parse renders a parse as it is: no people are chosen
    photo = portrait_photo(64, 64, 24, 4, 20)[None]
    out = pipe(photo)
    portrait, alpha = render_parse(pipe.renderer, photo, out.parse, out.person)
    torch.testing.assert_close(portrait, out.portrait)
    torch.testing.assert_close(alpha, out.alpha)


@pytest.mark.parametrize("preset", ["disc", "gaussian"])
def test_fast_render_matches_the_reference(preset):
    """The reduced-resolution render stays close to the full-resolution reference."""
    from portraitseg.render import render_portrait
    from portraitseg.render.fast import render_portrait_fast

    photo = torch.nn.functional.interpolate(portrait_photo(60, 80, 24, 6, 28, seed=5)[None], size=(240, 320),
                                            mode="bicubic", align_corners=False).clamp(0, 1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 96), torch.linspace(-1, 1, 128), indexing="ij")
    alpha = torch.sigmoid((0.4 - xx**2 - (yy - 0.3) ** 2) * 15)[None, None]
    options = render_preset(preset).options
    ref, ref_alpha = render_portrait(photo, alpha=alpha, **options)
    fast, fast_alpha = render_portrait_fast(photo, alpha, **options, factor=2)
    psnr = -10 * torch.log10(((ref - fast) ** 2).mean())
    assert fast.shape == ref.shape and fast_alpha.shape == ref_alpha.shape
    assert psnr > 35, float(psnr)
    assert (ref_alpha - fast_alpha).abs().mean() < 0.01


@pytest.mark.parametrize("preset", ["disc", "gaussian"])
def test_fast_render_falls_back_to_the_differentiable_reference(preset):
    """With gradients wanted, the fast render is the full-resolution, differentiable one."""
    from portraitseg.render.fast import render_portrait_fast

    photo = torch.rand(1, 3, 96, 128, requires_grad=True)
    alpha = torch.rand(1, 1, 48, 64)
    options = render_preset(preset).options
    with torch.enable_grad():
        portrait = render_portrait_fast(photo, alpha, **options, factor=2)[0]
    assert portrait.grad_fn is not None
    portrait.mean().backward()
    assert photo.grad is not None and photo.grad.abs().sum() > 0


def test_kernels_first_made_under_inference_mode_serve_later_differentiable_renders():
    """The pipeline runs under inference_mode; the kernels it caches must stay normal tensors,
    or every later differentiable render (training) fails to save them for backward."""
    from portraitseg.render.blur import disc_blur, disc_kernel2d, gaussian_blur, gaussian_kernel1d

    sigma, radius = 2.718281, 3.14159  # values no other test uses: made here, first
    with torch.inference_mode():
        cached = [gaussian_kernel1d(sigma), disc_kernel2d(radius)]
        pipeline()(portrait_photo(64, 64, 24, 4, 20))
    assert not any(k.is_inference() for k in cached)
    x = torch.rand(1, 3, 48, 48, requires_grad=True)
    for blur, size in ((gaussian_blur, sigma), (disc_blur, radius)):
        blur(x, size, method="exact").mean().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        x.grad = None


# ---------------------------------------------------------------------------------------------
# files: from_pretrained, the CLI


@pytest.fixture(scope="module")
def two_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights export of a tiny two-output model (Helen parse + person matte), trained size 64."""
    root = tmp_path_factory.mktemp("pipeline_models")
    return export_weights(tiny_checkpoint(root / "last.ckpt", person_head=True), root / "model.pt")


def test_from_pretrained_loads_and_names_bad_files(two_output, tmp_path):
    assert PortraitPipeline.from_pretrained(two_output).subject == "person"  # disc: the whole person
    pipe = PortraitPipeline.from_pretrained(two_output, render="gaussian", device="cpu")
    assert pipe.model_size == 64 and pipe.person_head and pipe.subject == "face" and pipe.helen  # the paper
    assert pipe.renderer.options["blur"] == "gaussian" and not pipe.training
    out = pipe(torch.rand(2, 3, 72, 90))
    assert out.portrait.shape == (2, 3, 72, 90) and out.alpha.shape == (2, 1, 72, 90)
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        PortraitPipeline.from_pretrained(missing)
    foreign = tmp_path / "notes.pt"
    foreign.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt.*expected"):
        PortraitPipeline.from_pretrained(foreign)
    with pytest.raises(PipelineError, match="no such preset.*disc"):
        PortraitPipeline.from_pretrained(two_output, render="dslr")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_placement(two_output):
    pipe = PortraitPipeline.from_pretrained(two_output, device="cuda")
    out = pipe(torch.rand(2, 3, 100, 80, device="cuda"))
    assert out.portrait.device.type == out.alpha.device.type == out.parse.device.type == "cuda"
    cpu = PortraitPipeline.from_pretrained(two_output, device="cpu")(torch.rand(2, 3, 100, 80))
    assert cpu.portrait.shape == out.portrait.shape


def test_cli_writes_what_the_pipeline_computes(two_output, tmp_path, capsys):
    rng = np.random.default_rng(3)
    src = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(src)
    out = tmp_path / "out"
    args = ["render", str(src), "-o", str(out), "--ckpt", str(two_output), "--save-alpha", "--device", "cpu"]
    assert main(args) == 0, capsys.readouterr().err
    pipe = PortraitPipeline.from_pretrained(two_output, render="disc", device="cpu")
    rgb = read_image(src)
    result = pipe(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    written = np.asarray(Image.open(out / "photo_portrait.png"))
    np.testing.assert_array_equal(written, to_uint8(result.portrait[0]))
    exact = result.portrait[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy().astype(int)
    assert np.abs(written.astype(int) - exact).max() <= 1  # OpenCV's rounding of exact halves
    with Image.open(out / "photo_alpha.png") as matte:
        assert matte.mode == "L" and matte.size == (90, 70)
        np.testing.assert_array_equal(np.asarray(matte), to_uint8(result.alpha[0, 0]))
    before = (out / "photo_alpha.png").read_bytes()
    assert main(args) == 0
    assert (out / "photo_alpha_1.png").is_file() and (out / "photo_portrait_1.png").is_file()
    assert (out / "photo_alpha.png").read_bytes() == before  # never overwritten
    assert "photo_alpha_1.png" in capsys.readouterr().out


def test_import_portraitseg_stays_light():
    code = ("import sys, portraitseg; assert 'torch' not in sys.modules, 'torch imported'; "
            "print(portraitseg.PortraitPipeline.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "PortraitPipeline"
