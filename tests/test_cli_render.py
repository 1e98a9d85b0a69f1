"""``portraitseg render``: inputs, outputs, overwrite safety, bad inputs, selective classes, subject.

Plumbing runs a tiny untrained segmenter (FCN on MobileNetV3-small-0.5, 0.46 M parameters) saved
as a Lightning checkpoint and as a weights export. Tests that need a known segmentation use a
colour oracle instead: red pixels are hair, green pixels skin, the rest background.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import portraitseg.cli.render as cli_render
from conftest import tiny_checkpoint
from portraitseg.classes import CLASS_NAMES, NUM_CLASSES
from portraitseg.cli.main import main
from portraitseg.io import read_image
from portraitseg.models.checkpoint import export_weights
from portraitseg.models.inference import segment_letterboxed
from portraitseg.pipeline import PortraitPipeline, render_preset
from portraitseg.render.options import PERSON_DEFAULTS
from portraitseg.viz import stages_figure

REPO = Path(__file__).resolve().parents[1]
HAIR, SKIN = CLASS_NAMES.index("hair"), CLASS_NAMES.index("skin")


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Lightning checkpoint (as `python train.py` writes) and its weights export."""
    root = tmp_path_factory.mktemp("models")
    export_weights(tiny_checkpoint(root / "last.ckpt"), root / "model.pt")
    return {"ckpt": root / "last.ckpt", "export": root / "model.pt"}


#: Colour code of the oracle segmenters: the class of the nearest reference colour (within
#: ORACLE_RADIUS), else background.
HAIR_RGB, SKIN_RGB, BODY_RGB = (210, 40, 40), (40, 210, 40), (40, 40, 210)
EYE_RGB, MOUTH_RGB = (230, 230, 40), (40, 230, 230)
FACE_CODE = {HAIR: HAIR_RGB, SKIN: SKIN_RGB, CLASS_NAMES.index("left_eye"): EYE_RGB,
             CLASS_NAMES.index("right_eye"): EYE_RGB, CLASS_NAMES.index("upper_lip"): MOUTH_RGB}
ORACLE_RADIUS = 110 / 255


class ColourOracle(torch.nn.Module):
    """Segmenter with a known answer: each pixel's class follows its colour (``code``)."""

    def __init__(self, code: dict[int, tuple[int, int, int]], classes: int) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(40.0))
        self.code, self.classes = code, classes

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = torch.full((image.shape[0], self.classes, *image.shape[-2:]), -1e3, dtype=image.dtype)
        logits[:, 0] = -(ORACLE_RADIUS**2)
        for cls, rgb in self.code.items():
            ref = torch.tensor(rgb, dtype=image.dtype).view(1, 3, 1, 1) / 255
            logits[:, cls] = -((image - ref) ** 2).mean(1) * 3
        return logits * self.scale


HELEN_INFO = {"class_names": list(CLASS_NAMES), "image_size": 128, "model": {"classes": NUM_CLASSES}}


@pytest.fixture
def oracle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("portraitseg.models.checkpoint.load_segmenter",
                        lambda path, map_location="cpu": (ColourOracle(FACE_CODE, NUM_CLASSES), HELEN_INFO))


def textured(h: int, w: int, seed: int, base=(110, 110, 110), amp: int = 60) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-amp, amp + 1, (h, w, 3))
    return np.clip(np.asarray(base) + noise, 0, 255).astype(np.uint8)


def save(path: Path, rgb: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, **kwargs)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    code = main(["render", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------
# inputs and outputs


def test_single_files_keep_format_and_size(tmp_path, models, capsys):
    jpg = save(tmp_path / "in" / "photo.jpg", textured(96, 128, 0), quality=90)
    png = save(tmp_path / "in" / "Shot.PNG", textured(100, 80, 1))
    out = tmp_path / "out"
    for src, fmt in ((jpg, "JPEG"), (png, "PNG")):
        code, stdout, err = render(capsys, src, "-o", out, "--ckpt", models["ckpt"], "--subject", "face")
        assert code == 0, err
        result = out / f"{src.stem}_portrait{src.suffix}"
        assert str(result) in stdout
        with Image.open(result) as img:
            assert img.format == fmt and img.mode == "RGB"
            assert img.size == Image.open(src).size
    assert sorted(p.name for p in out.iterdir()) == ["Shot_portrait.PNG", "photo_portrait.jpg"]


def test_jpeg_quality_option(tmp_path, models, capsys):
    src = save(tmp_path / "p.jpg", textured(64, 64, 2))
    sizes = []
    for quality in (30, 98):
        code, _, err = render(capsys, src, "-o", tmp_path / f"q{quality}", "--ckpt", models["export"],
                              "--quality", quality, "--subject", "face")
        assert code == 0, err
        sizes.append((tmp_path / f"q{quality}" / "p_portrait.jpg").stat().st_size)
    assert sizes[0] < sizes[1]


def test_folder_glob_and_recursive(tmp_path, models, capsys):
    photos = tmp_path / "photos"
    save(photos / "a.png", textured(64, 64, 3))
    save(photos / "b.jpg", textured(64, 80, 4))
    (photos / "notes.txt").write_text("not a photo")
    save(photos / "sub" / "c.png", textured(72, 64, 5))
    out = tmp_path / "out"

    code, _, err = render(capsys, photos, "-o", out, "--ckpt", models["export"], "--subject", "face")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a_portrait.png", "b_portrait.jpg"]

    code, _, err = render(capsys, photos, "-o", tmp_path / "rec", "--recursive", "--ckpt", models["export"],
                          "--subject", "face")
    assert code == 0, err
    assert (tmp_path / "rec" / "sub" / "c_portrait.png").is_file()  # sub-folder kept

    # a pattern the shell did not expand (quoted): expanded by the command
    code, _, err = render(capsys, str(photos / "*.png"), "-o", tmp_path / "glob", "--ckpt", models["export"],
                          "--subject", "face")
    assert code == 0, err
    assert [p.name for p in (tmp_path / "glob").iterdir()] == ["a_portrait.png"]


#: The inverse of the transpose ``ImageOps.exif_transpose`` applies for each EXIF orientation.
STORE_FOR_ORIENTATION = {
    1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270,
}


def test_every_exif_orientation_gives_upright_output(tmp_path, models, capsys):
    upright = textured(96, 64, 6, amp=10)
    upright[:32, :24] = (230, 20, 20)  # a red block at the top left of the upright photo
    (tmp_path / "in").mkdir()
    for orientation, store in STORE_FOR_ORIENTATION.items():
        img = Image.fromarray(upright)
        img = img.transpose(store) if store is not None else img
        exif = Image.Exif()
        exif[0x0112] = orientation  # Orientation
        img.save(tmp_path / "in" / f"o{orientation}.jpg", exif=exif.tobytes(), quality=95)
    code, _, err = render(capsys, tmp_path / "in", "-o", tmp_path / "out", "--ckpt", models["export"],
                          "--subject", "face")
    assert code == 0, err
    for orientation in STORE_FOR_ORIENTATION:
        out = np.asarray(Image.open(tmp_path / "out" / f"o{orientation}_portrait.jpg")).astype(float)
        assert out.shape == upright.shape, orientation
        marker, rest = out[4:28, 4:20].reshape(-1, 3).mean(0), out[40:, 30:].reshape(-1, 3).mean(0)
        assert marker[0] > 180 and marker[1] < 80, (orientation, marker)
        assert rest[0] < 160, (orientation, rest)


def test_stages_figure(tmp_path, models, capsys):
    yy, xx = np.mgrid[:90, :120]
    smooth = np.stack([xx * 2, yy * 2, 255 - xx - yy], -1).clip(0, 255).astype(np.uint8)  # JPEG-friendly
    src = save(tmp_path / "face.png", smooth)
    code, stdout, err = render(capsys, src, "-o", tmp_path / "out", "--ckpt", models["ckpt"], "--stages",
                               "--subject", "face")
    assert code == 0, err
    figure = tmp_path / "out" / "face_stages.jpg"
    assert str(figure) in stdout
    with Image.open(figure) as img:
        assert img.format == "JPEG"
        assert img.size == (4 * 120 + 3 * 4, 24 + 90)  # 4 panels + gaps, caption strip on top
        panels = np.asarray(img)[24:]
    # first panel is the input, last the portrait (both JPEG-compressed in the figure)
    portrait = np.asarray(Image.open(tmp_path / "out" / "face_portrait.png")).astype(float)
    assert np.abs(panels[:, :120] - smooth.astype(float)).mean() < 4
    assert np.abs(panels[:, -120:] - portrait).mean() < 4


def test_stages_figure_panels_are_capped():
    big = np.zeros((1500, 3000, 3), np.uint8)
    fig = stages_figure(big, np.zeros((10, 20), np.uint8), np.zeros((1500, 3000), np.float32), big)
    assert fig.shape == (24 + 384, 4 * 768 + 12, 3)


def test_never_overwrites_inputs_and_suffixes_outputs(tmp_path, models, capsys):
    folder = tmp_path / "photos"
    a = save(folder / "a.png", textured(64, 64, 8))
    # an input that is named like a's output: writing into the same folder must not replace it
    a_portrait = save(folder / "a_portrait.png", textured(64, 64, 9))
    inputs = [a, a_portrait]
    before = {p: sha(p) for p in inputs}
    args = ["--ckpt", models["export"], "--subject", "face", "-o", folder, "-q"]

    assert render(capsys, *inputs, *args)[0] == 0
    assert (folder / "a_portrait_1.png").is_file()            # a_portrait.png is an input
    assert (folder / "a_portrait_portrait.png").is_file()
    first = sha(folder / "a_portrait_1.png")

    assert render(capsys, *inputs, *args)[0] == 0              # outputs exist: suffixed
    assert (folder / "a_portrait_2.png").is_file()
    assert (folder / "a_portrait_portrait_1.png").is_file()

    (folder / "a_portrait_1.png").write_bytes(b"stale")
    assert render(capsys, *inputs, *args, "--overwrite")[0] == 0
    assert sha(folder / "a_portrait_1.png") == first           # replaced in place, inputs untouched
    assert not (folder / "a_portrait_3.png").exists()
    assert {p: sha(p) for p in inputs} == before

    # re-running on the folder does not render the earlier outputs again
    code, _, err = render(capsys, folder, "--ckpt", models["export"], "--subject", "face", "-o", folder)
    assert code == 0 and "skipped" in err
    assert {p: sha(p) for p in inputs} == before


def test_same_stem_from_two_folders_in_one_run(tmp_path, models, capsys):
    x1 = save(tmp_path / "one" / "x.png", textured(64, 64, 10))
    x2 = save(tmp_path / "two" / "x.png", textured(64, 64, 11))
    code, _, err = render(capsys, x1, x2, "-o", tmp_path / "out", "--overwrite", "--ckpt", models["export"],
                          "--subject", "face", "--stages")
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["x_portrait.png", "x_portrait_1.png", "x_stages.jpg", "x_stages_1.jpg"]


# ---------------------------------------------------------------------------------------------
# selective classes and subject


def _regions_photo(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Textured blocks on a grey background: red (hair), green (skin), blue (a body: background
    for the face parse, person for the person model)."""
    img = textured(96, 160, 12, base=(110, 110, 110), amp=50)
    masks = {name: np.zeros((96, 160), bool) for name in ("hair", "skin", "body")}
    masks["hair"][16:80, 8:52] = True
    masks["skin"][16:80, 60:104] = True
    masks["body"][16:80, 112:152] = True
    for seed, (name, rgb) in enumerate((("hair", HAIR_RGB), ("skin", SKIN_RGB), ("body", BODY_RGB))):
        img[masks[name]] = textured(96, 160, 13 + seed, base=rgb, amp=30)[masks[name]]
    return save(tmp_path / "blocks.png", img), masks


def _erode(mask: np.ndarray, r: int = 4) -> np.ndarray:
    import cv2

    return cv2.erode(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)


def _change(src: Path, out: Path) -> np.ndarray:
    """Per-pixel mean absolute change ``(H, W)`` from the photo to the portrait (0..255)."""
    before, after = (np.asarray(Image.open(p)).astype(float) for p in (src, out))
    return np.abs(after - before).mean(-1)


@pytest.mark.parametrize(("keep", "sharp"),
                         [("hair", {"hair"}), ("skin", {"skin"}), ("10,1", {"hair", "skin"})])
def test_keep_changes_which_pixels_stay_sharp(tmp_path, oracle, capsys, keep, sharp):
    src, masks = _regions_photo(tmp_path)
    code, _, err = render(capsys, src, "-o", tmp_path / "out", "--ckpt", "oracle", "--subject", "face",
                          "--keep", keep, "--strength", 0.04, "--falloff", 0)
    assert code == 0, err
    change = _change(src, tmp_path / "out" / "blocks_portrait.png")
    # alpha-derived expectation: the kept classes' interiors are the photo, everything else is blurred
    alpha = np.logical_or.reduce([masks[name] for name in sharp])
    assert change[_erode(alpha)].mean() < 1.0, change[_erode(alpha)].mean()
    assert change[_erode(~alpha)].mean() > 10.0, change[_erode(~alpha)].mean()


def test_person_ckpt_subject_is_person_mask_and_kept_classes(tmp_path, monkeypatch, capsys):
    """--person-ckpt: subject = the person model's mask + the kept face classes."""
    src, masks = _regions_photo(tmp_path)
    person_info = {"class_names": ["background", "person"], "image_size": 96, "model": {"classes": 2}}

    def load(path, map_location="cpu"):
        if "person" in str(path):
            return ColourOracle({1: BODY_RGB}, 2), person_info
        return ColourOracle(FACE_CODE, NUM_CLASSES), HELEN_INFO

    monkeypatch.setattr("portraitseg.models.checkpoint.load_segmenter", load)
    code, _, err = render(capsys, src, "-o", tmp_path / "out", "--ckpt", "face.pt",
                          "--person-ckpt", "person.pt", "--keep", "hair", "--strength", 0.04, "--falloff", 0)
    assert code == 0, err
    change = _change(src, tmp_path / "out" / "blocks_portrait.png")
    subject = masks["hair"] | masks["body"]  # skin is not kept: blurred
    assert change[_erode(subject)].mean() < 1.5, change[_erode(subject)].mean()
    assert change[_erode(~subject)].mean() > 10.0

    code, _, err = render(capsys, src, "-o", tmp_path / "out", "--ckpt", "face.pt",
                          "--person-ckpt", "face2.pt")
    assert code == 2 and "2-class person segmenter" in err


def _portrait_photo(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A colour-coded person: hair, a skin face with eyes and mouth, a blue body below it."""
    import cv2

    h, w = 160, 128
    img = textured(h, w, 60, base=(120, 120, 120), amp=50)
    layers = [(HAIR_RGB, lambda m: cv2.ellipse(m, (64, 44), (30, 32), 0, 0, 360, 1, -1)),
              (BODY_RGB, lambda m: cv2.ellipse(m, (64, 170), (54, 80), 0, 0, 360, 1, -1)),
              (SKIN_RGB, lambda m: cv2.ellipse(m, (64, 58), (22, 28), 0, 0, 360, 1, -1)),
              (EYE_RGB, lambda m: cv2.circle(cv2.circle(m, (55, 52), 4, 1, -1), (73, 52), 4, 1, -1)),
              (MOUTH_RGB, lambda m: cv2.rectangle(m, (56, 70), (72, 74), 1, -1))]
    body = None
    for i, (rgb, draw) in enumerate(layers):
        mask = draw(np.zeros((h, w), np.uint8)).astype(bool)
        img[mask] = textured(h, w, 61 + i, base=rgb, amp=25)[mask]
        if rgb == BODY_RGB:
            body = mask.copy()
        elif body is not None:  # drawn over the body
            body &= ~mask
    return save(tmp_path / "person.png", img), body


def test_subject_person_keeps_the_body_sharp(tmp_path, oracle, capsys):
    src, body = _portrait_photo(tmp_path)
    change = {}
    for subject in ("face", "person"):
        code, _, err = render(capsys, src, "-o", tmp_path / subject, "--ckpt", "oracle", "--subject", subject,
                              "--strength", 0.04, "--falloff", 0)
        assert code == 0, err
        assert "Traceback" not in err
        change[subject] = _change(src, tmp_path / subject / "person_portrait.png")[_erode(body)].mean()
    # the face parse labels the body background: blurred with subject=face, kept with person
    assert change["face"] > 10.0, change
    assert change["person"] < 0.3 * change["face"], change


def test_subject_person_without_a_face_warns(tmp_path, oracle, capsys):
    src = save(tmp_path / "wall.png", textured(64, 64, 70))
    code, _, err = render(capsys, src, "-o", tmp_path / "out", "--ckpt", "oracle")
    assert code == 0, err
    assert f"warning: {src}: " in err and "no face" in err


# ---------------------------------------------------------------------------------------------
# bad inputs and usage errors


def _bomb_png(path: Path, side: int = 60_000) -> Path:
    """A tiny PNG whose header declares ``side x side`` RGB pixels (a decompression bomb)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _corpus(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """(bad files -> expected error words, convertible files that must render)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = save(folder / "good.jpg", textured(64, 80, 20))
    bad = {}
    (folder / "text.jpg").write_text("this is not an image\n")
    bad["not an image"] = folder / "text.jpg"
    (folder / "empty.png").write_bytes(b"")
    bad["empty file"] = folder / "empty.png"
    data = good.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    bad["truncated"] = folder / "truncated.jpg"
    bad["exceeds the limit"] = _bomb_png(folder / "bomb.png")
    converted = {"good": good}
    converted["grey"] = save(folder / "grey.png", textured(64, 64, 21)[..., 0])
    rgba = np.dstack([textured(64, 64, 22), np.full((64, 64), 128, np.uint8)])
    converted["rgba"] = save(folder / "rgba.png", rgba)
    converted["cmyk"] = folder / "cmyk.jpg"
    Image.fromarray(textured(64, 64, 23)).convert("CMYK").save(converted["cmyk"])
    converted["16-bit"] = folder / "deep.png"
    deep = (np.random.default_rng(24).random((64, 64)) * 65535).astype(np.uint16)
    Image.fromarray(deep).save(converted["16-bit"])
    converted["palette"] = folder / "palette.png"
    Image.fromarray(textured(64, 64, 25)).convert("P").save(converted["palette"])
    with Image.open(converted["16-bit"]) as img:
        assert img.mode.startswith("I")  # really a 16-bit file
    return bad, converted


def test_bad_inputs_named_errors_others_rendered(tmp_path, models, capsys):
    bad, converted = _corpus(tmp_path / "in")
    before = {p: sha(p) for p in [*bad.values(), *converted.values()]}
    missing = tmp_path / "in" / "missing.jpg"
    code, _, err = render(capsys, *bad.values(), *converted.values(), missing, "-o", tmp_path / "out",
                          "--ckpt", models["export"], "--subject", "face", "--max-pixels", 1_000_000)
    assert code == 1
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad) + 1, err
    for words, path in bad.items():
        line = next(line for line in errors if str(path) in line)
        assert words in line, line
    assert any(str(missing) in line and "no such file" in line for line in errors)
    for name, path in converted.items():
        out = tmp_path / "out" / f"{path.stem}_portrait{path.suffix}"
        assert out.is_file(), name
        rendered = read_image(out)
        assert rendered.shape[:2] == read_image(path).shape[:2], name
    assert not any((tmp_path / "out" / f"{p.stem}_portrait{p.suffix}").exists() for p in bad.values())
    assert {p: sha(p) for p in before} == before


def test_cli_process_exit_codes_and_clean_stderr(tmp_path, models):
    """The real entry point: a per-file error without a traceback, the good file rendered, status 1."""
    folder = tmp_path / "my photos"
    try:  # a file name that is not valid UTF-8 (and has a space): printed escaped, never a crash
        good = save(folder / os.fsdecode(b"good caf\xe9.png"), textured(64, 64, 30))
    except (OSError, UnicodeError):
        good = save(folder / "good photo.png", textured(64, 64, 30))
    bad = folder / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    cmd = [sys.executable, "-m", "portraitseg.cli.main", "render", str(good), str(bad), "-o",
           str(tmp_path / "out"), "--ckpt", str(models["export"]), "--subject", "face"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8:strict"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, errors="replace")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"error: {bad}:" in proc.stderr
    assert (tmp_path / "out" / f"{good.stem}_portrait.png").is_file()
    assert "good" in proc.stdout and "_portrait.png" in proc.stdout


def test_entry_point_flushes_its_output_before_the_fast_exit():
    """``run`` skips the interpreter's teardown: what was printed still arrives whole, and the
    exit status is main's."""
    code = ("import portraitseg.cli.main as m; "
            "m.main = lambda: print('x' * 100000) or print('done', file=__import__('sys').stderr) or 3; "
            "m.run()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == "x" * 100000 + "\n" and proc.stderr == "done\n"


def test_no_input_matched_is_a_usage_error(tmp_path, models, capsys):
    (tmp_path / "empty").mkdir()
    for spec in (tmp_path / "nothing*.png", tmp_path / "absent.jpg", tmp_path / "empty"):
        code, _, err = render(capsys, spec, "--ckpt", models["export"], "-o", tmp_path / "out")
        assert code == 2 and "no input images" in err, err
    assert not (tmp_path / "out").exists()


def test_missing_model_says_what_to_pass(tmp_path, monkeypatch, capsys):
    src = save(tmp_path / "p.png", textured(64, 64, 40))
    monkeypatch.setattr(cli_render, "default_model_path", lambda: None)
    monkeypatch.chdir(tmp_path)
    code, _, err = render(capsys, src)
    assert code == 2
    assert "--ckpt outputs/<task>/runs/<time>/checkpoints/last.ckpt" in err and "python train.py" in err
    assert "Traceback" not in err

    code, _, err = render(capsys, src, "--ckpt", "")  # e.g. the Makefile's $(ls ...) found nothing
    assert code == 2 and "--ckpt is empty" in err

    # with a run in the current folder, its newest checkpoint is named
    ckpt = tmp_path / "outputs" / "demo" / "runs" / "2024-01-01_00-00-00" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    code, _, err = render(capsys, src)
    assert code == 2 and "outputs/demo/runs/2024-01-01_00-00-00/checkpoints/last.ckpt" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ckpt", "{tmp}/nope.ckpt"], "no such model file"),
        (["--ckpt", "{tmp}/p.png"], "not a PyTorch file"),
        (["--keep", "hair,beard"], "unknown class 'beard'"),
        (["--render", "fisheye"], "invalid choice"),
        (["--quality", "0"], "argument --quality: 0 is out of range: must be 1..100"),
        (["--strength", "-1"], "argument --strength: -1 is out of range: must be in [0, 1]"),
        (["--strength", "inf"], "argument --strength: 'inf' is not a finite number"),
        (["--falloff", "nan"], "argument --falloff: 'nan' is not a finite number"),
        (["--highlights", "inf"], "argument --highlights: 'inf' is not a finite number"),
        (["--feather", "2"], "argument --feather: 2 is out of range"),
        (["--model-size", "0"], "argument --model-size: 0 is out of range: must be 32..4096"),
        (["--model-size", "-64"], "argument --model-size: -64 is out of range"),
        (["--max-pixels", "0"], "argument --max-pixels: 0 is out of range: must be >= 1"),
    ],
)
def test_usage_errors_exit_2(tmp_path, models, capsys, argv, message):
    src = save(tmp_path / "p.png", textured(64, 64, 41))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--ckpt" not in argv:
        argv += ["--ckpt", str(models["export"])]
    try:
        code, _, err = render(capsys, src, "-o", tmp_path / "out", *argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_lightning_ckpt_tta_and_model_size(tmp_path, models, capsys):
    src = save(tmp_path / "wide.png", textured(60, 140, 50))
    code, _, err = render(capsys, src, "-o", tmp_path / "out", "--ckpt", models["ckpt"], "--tta",
                          "--model-size", 96, "--render", "gaussian", "--subject", "face", "--device", "cpu")
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "out" / "wide_portrait.png")).shape == (60, 140, 3)


def test_segment_probabilities_at_model_resolution(models):
    pipe = PortraitPipeline.from_pretrained(models["export"], device="cpu")
    assert pipe.model_size == 64 and pipe.helen
    image = torch.from_numpy(textured(300, 150, 51)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        probs, _ = segment_letterboxed(pipe.segmenter, image, pipe.model_size)
        probs_tta, _ = segment_letterboxed(pipe.segmenter, image, pipe.model_size, tta=True,
                                           flip_perm=pipe.flip_perm)
    assert probs.shape == probs_tta.shape == (1, NUM_CLASSES, 64, 32)  # letterbox cropped
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 64, 32))


def test_render_config_composes_presets_and_overrides():
    presets = cli_render.render_presets()
    assert {"disc", "gaussian"} <= set(presets)
    renderer = render_preset("gaussian", strength=0.03, keep=[HAIR])
    assert renderer.keep == (HAIR,)
    assert renderer.options["blur"] == "gaussian" and renderer.options["strength"] == 0.03
    default = cli_render._default_preset()
    assert default in presets


def test_preset_subject_and_person_options_reach_the_person_extension(tmp_path, monkeypatch, oracle, capsys):
    """A preset's ``subject`` and ``person:`` block configure the subject, not the renderer."""
    conf = tmp_path / "conf"
    (conf / "render").mkdir(parents=True)
    (conf / "render.yaml").write_text((REPO / "conf" / "render.yaml").read_text())
    (conf / "render" / "disc.yaml").write_text("_target_: portraitseg.render.PortraitRenderer\nblur: disc\n"
                                               "subject: face\nperson:\n  work_size: 96\n")
    monkeypatch.setattr(cli_render, "_conf_dir", lambda: conf)
    monkeypatch.setattr("portraitseg.presets.presets_dir", lambda: conf / "render")
    renderer = render_preset("disc", keep=[HAIR])
    subject, person = renderer.subject, renderer.person
    assert subject == "face" and person == {**PERSON_DEFAULTS, "work_size": 96}
    assert renderer.keep == (HAIR,)

    seen = {}
    import portraitseg.subject.grabcut as person_module

    real = person_module.person_alpha

    def spy(image, probs, keep, **options):
        seen.update(options)
        return real(image, probs, keep, **options)

    monkeypatch.setattr(person_module, "person_alpha", spy)
    src = save(tmp_path / "p.png", textured(64, 64, 80))
    code, _, err = render(capsys, src, "-o", tmp_path / "face", "--ckpt", "oracle")  # the preset's subject
    assert code == 0, err
    assert seen == {}
    code, _, err = render(capsys, src, "-o", tmp_path / "person", "--ckpt", "oracle",
                          "--subject", "person")
    assert code == 0, err
    assert seen == {**PERSON_DEFAULTS, "work_size": 96}


def test_folder_overlaps_decode_and_write_and_reports_in_order(tmp_path, models, capsys, monkeypatch):
    """Photos are decoded and written in threads beside the render; the report keeps input order,
    and a photo that fails to decode or to write does not stop the others."""
    import threading

    folder = tmp_path / "in"
    for i in range(5):
        save(folder / f"p{i}.png", textured(48, 40, 60 + i))
    (folder / "p2.png").write_bytes(b"not a png")  # fails in the decode thread
    threads = {"read": set(), "write": set()}
    import portraitseg.cli.photos as photos

    real_read, real_write = photos.read_input, photos.write_outputs

    def read(src, max_pixels):
        threads["read"].add(threading.current_thread().name)
        return real_read(src, max_pixels)

    def write(job, photo, rendered, out, figure, alpha):
        threads["write"].add(threading.current_thread().name)
        if out.name.startswith("p3"):
            raise OSError("disk full")
        return real_write(job, photo, rendered, out, figure, alpha)

    monkeypatch.setattr(photos, "read_input", read)
    monkeypatch.setattr(photos, "write_outputs", write)
    code, out, err = render(capsys, folder, "-o", tmp_path / "out", "--ckpt", models["export"],
                            "--subject", "face", "--threads", 1)
    assert code == 1
    assert threads["read"] and threading.main_thread().name not in threads["read"]
    assert threads["write"] and threading.main_thread().name not in threads["write"]
    reported = [line.split(" -> ")[0] for line in out.splitlines()]
    assert reported == [str(folder / f"p{i}.png") for i in (0, 1, 4)]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "p2.png" in errors[0] and "p3.png" in errors[1] and "disk full" in errors[1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"p{i}_portrait.png" for i in (0, 1, 4)]


def test_render_path_imports_only_what_inference_needs(tmp_path):
    """A render with the bundled model loads its TorchScript artifact: no training, config or
    model-zoo package is imported (they cost seconds of start-up)."""
    from portraitseg.models.checkpoint import default_model_path

    if default_model_path() is None:
        pytest.skip("no bundled model in this install")
    photo = save(tmp_path / "p.jpg", textured(864, 1152, 90))  # large enough for the fast render
    heavy = ("lightning", "pytorch_lightning", "hydra", "omegaconf", "wandb", "albumentations",
             "segmentation_models_pytorch", "timm", "torchvision", "kornia")
    code = ("import sys; from portraitseg.cli.main import main; "
            f"rc = main(['render', {str(photo)!r}, '-o', {str(tmp_path / 'out')!r}, '-q']); "
            f"print(rc, sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split(None, 1) == ["0", "[]\n"], proc.stdout
    assert (tmp_path / "out" / "p_portrait.jpg").is_file()
