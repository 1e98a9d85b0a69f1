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
