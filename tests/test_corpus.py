"""One bad-input corpus for the data layer and the ``portraitseg render`` CLI together.

Every case gives either a clear error naming the file or the correct result, never a bare
traceback, and no input file is modified (hashes before and after).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from portraitseg.cli.main import main
from portraitseg.data import Sample, load_sample
from portraitseg.io import InputError, read_image
from portraitseg.models.checkpoint import default_model_path

H, W = 48, 64  # stored size of the images (EXIF cases are stored like this, shown rotated)


@dataclass
class Case:
    name: str
    write: Callable[[Path], None]
    error: str | None = None  # regex of the expected error; None = must load / render
    size: tuple[int, int] = (H, W)  # upright (h, w) when it loads
    label: Callable[[Path], None] | None = None  # a non-default label file
    image_only: bool = False  # label cases make no sense for the CLI
    filename: bytes = b""


def rgb(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    img[:8, :8] = (255, 0, 0)  # an orientation marker
    return img


def save(fmt: str, mode: str | None = None, **kw) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        img = Image.fromarray(rgb())
        (img.convert(mode) if mode else img).save(path, fmt, **kw)

    return write


def raw(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def truncated(fmt: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        buf = io.BytesIO()
        Image.fromarray(rgb()).save(buf, fmt)
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])

    return write


def bomb(path: Path) -> None:
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = (70000).to_bytes(4, "big") * 2  # declares 70000 x 70000 = 4.9 GP
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))


def png16(path: Path) -> None:
    Image.fromarray(rgb()[..., 1].astype(np.uint16) * 257).save(path, "PNG")


def exif(orientation: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        info = Image.Exif()
        info[0x0112] = orientation
        Image.fromarray(rgb()).save(path, "JPEG", exif=info, quality=95)

    return write


def label_of(values: int | None = None, size: tuple[int, int] = (H, W)) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        label = np.zeros(size, np.uint8)
        label[10:20, 10:30] = 1
        if values is not None:
            label[0, 0] = values
        Image.fromarray(label).save(path, "PNG")

    return write


CASES = [
    Case("not_an_image", raw(b"%PDF-1.4 definitely not a picture"), error="not an image"),
    Case("zero_byte", raw(b""), error="empty file"),
    Case("truncated_jpeg", truncated("JPEG"), error="truncated|corrupt"),
    Case("truncated_png", truncated("PNG"), error="truncated|corrupt"),
    Case("decompression_bomb", bomb, error="exceeds the limit"),
    Case("png_16bit", png16),
    Case("cmyk_jpeg", save("JPEG", "CMYK")),
    Case("grayscale", save("PNG", "L")),
    Case("palette", save("PNG", "P")),
    Case("rgba", save("PNG", "RGBA")),
    *(Case(f"exif_{o}", exif(o), size=(H, W) if o <= 4 else (W, H)) for o in range(1, 9)),
    Case("label_ids_over_10", save("PNG"), error=r"label ids \[11\] outside 0..10", label=label_of(11),
         image_only=True),
    Case("label_size_mismatch", save("PNG"), error="label is 32x24 but its image", image_only=True,
         label=label_of(size=(24, 32))),
    Case("non_utf8_name", save("PNG"), filename=b"caf\xe9 \xff.png"),
    Case("space in name", save("PNG")),
]


def case_files(root: Path, case: Case) -> tuple[Path, Path]:
    """Write the case's image (and a label for the data layer) under ``root``."""
    suffix = "jpg" if "jpeg" in case.name or "exif" in case.name else "png"
    name = case.filename or f"{case.name}.{suffix}".encode()
    image = Path(os.fsdecode(os.path.join(os.fsencode(root), name)))
    case.write(image)
    label = root / f"{case.name}_label.png"
    (case.label or label_of(size=case.size))(label)
    return image, label


def digests(paths: list[Path]) -> dict[str, str]:
    return {os.fsencode(p).hex(): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_data_layer(tmp_path, case):
    image, label = case_files(tmp_path, case)
    before = digests([image, label])
    if case.error:
        with pytest.raises(InputError, match=case.error) as err:
            load_sample(Sample(case.name, image, label))
        shown = label.name if case.image_only else image.name
        assert shown in str(err.value)
    else:
        pixels, mask = load_sample(Sample(case.name, image, label))
        assert pixels.shape == (*case.size, 3) and pixels.dtype == np.uint8
        assert mask.shape == case.size
        if case.name.startswith("exif_"):  # the marker ends up where the orientation puts it
            from PIL import ImageOps

            expected = np.asarray(ImageOps.exif_transpose(Image.open(image)).convert("RGB"))
            np.testing.assert_array_equal(pixels, expected)
    assert digests([image, label]) == before


@pytest.mark.skipif(default_model_path() is None, reason="no bundled default model in this checkout")
def test_render_cli_over_the_whole_corpus(tmp_path, capsys):
    """One CLI run over every image case: named one-line errors, the rest rendered upright."""
    src = tmp_path / "in"
    src.mkdir()
    cases = [c for c in CASES if not c.image_only]
    images = {c.name: case_files(src, c)[0] for c in cases}
    before = digests(list(images.values()))
    out = tmp_path / "out"
    code = main(["render", *map(str, images.values()), "-o", str(out), "--subject", "face",
                 "--render", "halo_free"])
    _, err = capsys.readouterr()
    assert code == 1  # some inputs failed, the others were rendered
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == sum(c.error is not None for c in cases), err
    for case in cases:
        image = images[case.name]
        if case.error:
            line = next((e for e in errors if image.name in e), None)  # error cases have ASCII names
            assert line is not None, f"{case.name}: no error line naming {image.name!r} in {err}"
            assert re.search(case.error, line), line
        else:
            stem = os.fsencode(image.stem)
            outputs = [p for p in os.listdir(os.fsencode(out)) if p.startswith(stem + b"_portrait")]
            assert len(outputs) == 1, case.name
            result = read_image(Path(os.fsdecode(os.path.join(os.fsencode(out), outputs[0]))))
            assert result.shape == (*case.size, 3), case.name
    assert digests(list(images.values())) == before  # no input modified or overwritten


# --------------------------------------------------------------------------------------------
# Odd inputs over every command: each ends in its documented exit status with one "error:" line
# naming the file or option, never in a traceback, and no input file changes.


class Payload:
    """Pickles as a call to ``print``: a checkpoint holding it must be refused, never run."""

    def __reduce__(self):
        return (print, ("code ran while loading",))


@pytest.fixture
def odd(tmp_path: Path) -> dict[str, Path]:
    """The odd files the command cases refer to as ``{name}``."""
    import torch

    files = {"tmp": tmp_path, "dir": tmp_path / "a folder"}
    files["dir"].mkdir()
    files["photo"] = tmp_path / "photo.png"
    save("PNG")(files["photo"])
    files["zero"] = tmp_path / "zero.ckpt"
    files["zero"].write_bytes(b"")
    files["text"] = tmp_path / "notes.txt"
    files["text"].write_text("not an archive, not a model")
    files["crafted"] = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6", "x": Payload()}, files["crafted"])
    files["bare"] = tmp_path / "bare.pt"
    torch.save({"w": torch.zeros(2)}, files["bare"])
    files["json"] = tmp_path / "metrics.json"
    files["json"].write_text("{not json")
    import zipfile

    files["evil"] = tmp_path / "evil.zip"
    with zipfile.ZipFile(files["evil"], "w") as zf:
        zf.writestr("../evil.txt", "escaped")
    files["zip"] = tmp_path / "ok.zip"
    with zipfile.ZipFile(files["zip"], "w") as zf:
        zf.writestr("images/a.png", b"x")
    files["binary_list"] = tmp_path / "binlist"
    files["binary_list"].mkdir()
    (files["binary_list"] / "train.txt").write_bytes(b"\xff\xfe\x00bad list")
    files["model"] = default_model_path() or tmp_path / "no-default-model"
    return files


#: (id, command, argv, exit status, regex the error output must match); ``{name}``: an odd file
COMMANDS = [
    ("no_command", "portraitseg", [], 2, "the following arguments are required: COMMAND"),
    ("render_no_inputs", "portraitseg", ["render"], 2, "the following arguments are required: INPUT"),
    ("render_missing", "portraitseg", ["render", "{tmp}/nope.jpg"], 2, "no input images: nothing matched"),
    ("render_empty_folder", "portraitseg", ["render", "{dir}"], 2, "the given folders hold no images"),
    ("render_strength_inf", "portraitseg", ["render", "{photo}", "--strength", "inf"], 2,
     "--strength: 'inf' is not a finite number"),
    ("render_strength_text", "portraitseg", ["render", "{photo}", "--strength", "much"], 2,
     "--strength: 'much' is not a number"),
    ("render_quality", "portraitseg", ["render", "{photo}", "--quality", "101"],
     2, "--quality: 101 is out of range"),
    ("render_ckpt_folder", "portraitseg", ["render", "{photo}", "--ckpt", "{dir}"], 2, "no such model file"),
    ("render_ckpt_empty", "portraitseg", ["render", "{photo}", "--ckpt", "{zero}"], 2, "not a PyTorch file"),
    ("render_ckpt_crafted", "portraitseg", ["render", "{photo}", "--ckpt", "{crafted}"], 2,
     r"crafted\.ckpt: cannot load .* pickled Python objects .* refused"),
    ("render_ckpt_bare", "portraitseg", ["render", "{photo}", "--ckpt", "{bare}"], 2, "bare state dict"),
    ("render_out_is_file", "portraitseg", ["render", "{photo}", "-o", "{text}", "--ckpt", "{model}"], 2,
     "cannot create the output folder"),
    ("render_keep", "portraitseg", ["render", "{photo}", "--keep", "nose,beard", "--ckpt", "{model}"], 2,
     "unknown class 'beard'"),
    ("render_person_ckpt", "portraitseg",
     ["render", "{photo}", "--person-ckpt", "{model}", "--ckpt", "{model}"], 2,
     "a person model must have 2 classes"),
    ("render_person_ckpt_empty", "portraitseg",
     ["render", "{photo}", "--person-ckpt", "", "--ckpt", "{model}"], 2, "--person-ckpt is empty"),
    ("render_ckpt_empty_string", "portraitseg", ["render", "{photo}", "--ckpt", ""], 2, "--ckpt is empty"),
    ("export_missing", "portraitseg", ["export", "--ckpt", "{tmp}/nope.ckpt", "--onnx", "{tmp}/m.onnx"], 2,
     "no such model file"),
    ("export_crafted", "portraitseg", ["export", "--ckpt", "{crafted}", "--onnx", "{tmp}/m.onnx"], 2,
     "refused because unpickling them could run arbitrary code"),
    ("export_over_input", "portraitseg", ["export", "--ckpt", "{crafted}", "--onnx", "{crafted}"], 2,
     "is the same file as --ckpt"),
    ("export_to_folder", "portraitseg", ["export", "--ckpt", "{model}", "--onnx", "{dir}"], 2, "is a folder"),
    ("export_opset", "portraitseg",
     ["export", "--ckpt", "default", "--onnx", "{tmp}/m.onnx", "--opset", "99"], 2,
     "--opset: 99 is out of range: must be 13..20"),
    ("export_size", "portraitseg", ["export", "--ckpt", "default", "--onnx", "{tmp}/m.onnx", "--image-size",
                                    "0", "64"], 2, "--image-size: 0 is out of range"),
    ("check_missing", "data", ["check", "{tmp}/nope"], 2, "dataset root .* does not exist"),
    ("check_empty", "data", ["check", "{dir}"], 2, "no dataset layout recognised"),
    ("check_file", "data", ["check", "{photo}"], 2, "is a file, not a folder"),
    ("check_max_pixels", "data", ["check", "{dir}", "--max-pixels", "0"],
     2, "--max-pixels: 0 is out of range"),
    ("check_binary_list", "data", ["check", "{binary_list}"],
     1, r"train\.txt: cannot be read as a text list"),
    ("synth_n", "data", ["synth", "--root", "{tmp}/s", "--n", "0"], 2, "n=0: the number of samples"),
    ("synth_size", "data", ["synth", "--root", "{tmp}/s", "--size", "0"], 2, "--size"),
    ("synth_root_file", "data", ["synth", "--root", "{photo}", "--n", "2"],
     2, "exists and is not a directory"),
    ("synth_fraction", "data", ["synth", "--root", "{tmp}/s", "--n", "2", "--test-fraction", "1.5"], 2,
     "test_fraction=1.5"),
    ("download_missing", "data", ["download", "helen", "--url", "{tmp}/nope.zip", "--dest", "{tmp}/h"], 2,
     "nope.zip: no such file"),
    ("download_not_archive", "data", ["download", "helen", "--url", "{text}", "--dest", "{tmp}/h"], 1,
     "not a zip or tar archive"),
    ("download_evil", "data", ["download", "helen", "--url", "{evil}", "--dest", "{tmp}/h"], 1,
     r"contains '\.\.' \(path traversal\); refusing to extract"),
    ("download_sha", "data",
     ["download", "helen", "--url", "{zip}", "--dest", "{tmp}/h", "--sha256", "xyz"], 2,
     "expected 64 hexadecimal digits"),
    ("download_dest_file", "data", ["download", "helen", "--url", "{zip}", "--dest", "{photo}"], 2,
     "exists and is not a directory"),
    ("download_inside_dest", "data", ["download", "helen", "--url", "{zip}", "--dest", "{tmp}", "--force"], 2,
     "lies inside --dest"),
    ("download_timeout", "data", ["download", "helen", "--url", "{zip}", "--timeout", "-1"], 2,
     "--timeout: -1 is out of range"),
    ("weights_missing", "checkpoint", ["--ckpt", "{tmp}/nope.ckpt", "--out", "{tmp}/m.pt"],
     2, "no such model file"),
    ("weights_folder", "checkpoint", ["--ckpt", "{dir}", "--out", "{tmp}/m.pt"], 2, "no such model file"),
    ("weights_crafted", "checkpoint", ["--ckpt", "{crafted}", "--out", "{tmp}/m.pt"], 2, "refused because"),
    ("weights_over_input", "checkpoint", ["--ckpt", "{crafted}", "--out", "{crafted}"],
     2, "same file as --ckpt"),
    ("weights_bad_metrics", "checkpoint", ["--ckpt", "{model}", "--out", "{tmp}/m.pt", "--metrics", "{json}"],
     2, r"--metrics .*metrics\.json: not a metrics\.json of eval\.py"),
    ("weights_out_folder", "checkpoint", ["--ckpt", "{model}", "--out", "{dir}"], 2,
     "is a folder, not a file"),
    ("weights_out_unwritable", "checkpoint", ["--ckpt", "{model}", "--out", "{photo}/m.pt"], 2,
     r"error: .*photo\.png.*: (Not a directory|File exists)"),
    ("synth_root_unwritable", "data", ["synth", "--root", "{photo}/s", "--n", "1"], 2,
     r"photo\.png/s.*(Not a directory|cannot be written)"),
    ("download_dest_unwritable", "data", ["download", "helen", "--url", "{zip}", "--dest", "{photo}/d"], 2,
     r"photo\.png/d.*(Not a directory|cannot be written)"),
    ("download_url_empty", "data", ["download", "helen", "--url", "", "--dest", "{tmp}/h"], 2,
     "--url is empty"),
    ("onnx_usage", "onnx_infer", [], 2, "usage: python -m portraitseg.onnx_infer"),
    ("onnx_missing", "onnx_infer", ["{tmp}/nope.onnx", "{photo}", "{tmp}/o.png"],
     2, "no such ONNX model file"),
    ("onnx_not_model", "onnx_infer", ["{photo}", "{photo}", "{tmp}/o.png"], 2,
     "not an ONNX model onnxruntime can load"),
    ("sweep_missing", "sweep", ["summarize", "{tmp}/nope"], 2, "error:"),
    ("sweep_empty", "sweep", ["summarize", "{dir}"], 2, "no runs found"),
]
NEEDS_MODEL = {"render_out_is_file", "render_keep", "render_person_ckpt", "render_person_ckpt_empty",
               "export_to_folder", "weights_bad_metrics", "weights_out_folder", "weights_out_unwritable",
               "export_opset", "export_size"}


def _entry(command: str) -> Callable[[list[str]], int]:
    if command == "portraitseg":
        return main
    if command == "data":
        from portraitseg.data.__main__ import main as data_main

        return data_main
    if command == "checkpoint":
        from portraitseg.models.checkpoint import main as weights_main

        return weights_main
    if command == "onnx_infer":
        pytest.importorskip("onnxruntime")
        from portraitseg.onnx_infer import main as onnx_main

        return onnx_main
    from portraitseg.sweep import main as sweep_main

    return sweep_main


@pytest.mark.parametrize(("command", "argv", "code", "message"), [c[1:] for c in COMMANDS],
                         ids=[c[0] for c in COMMANDS])
def test_every_command_on_odd_input(odd, capsys, monkeypatch, request, command, argv, code, message):
    monkeypatch.setenv("COLUMNS", "1000")  # rich reports: one line per problem
    if request.node.callspec.id in NEEDS_MODEL and default_model_path() is None:
        pytest.skip("no bundled default model in this checkout")
    argv = [a.format(**odd) for a in argv]
    inputs = [p for p in odd.values() if p.is_file()]
    before = digests(inputs)
    try:
        got = _entry(command)(argv)
    except SystemExit as exit_:  # argparse's usage errors
        got = exit_.code
    # any other exception propagates: a traceback fails the test
    out, err = capsys.readouterr()
    assert got == code, f"exit {got}, expected {code}\n{out}\n{err}"
    assert "Traceback" not in out + err
    shown = err if code == 2 else out + err  # usage errors on stderr; data check reports on stdout
    assert re.search(message, shown), f"output does not match {message!r}:\n{out}\n{err}"
    assert "code ran while loading" not in out + err
    assert digests(inputs) == before, "an input file changed"
