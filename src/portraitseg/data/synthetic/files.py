"""The synthetic dataset on disk: :func:`generate` writes the portraits in the HELEN* layout with their
layers and a manifest (parameters + sha256 of every file); :func:`ensure_synthetic` reuses an intact one."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from portraitseg.classes import CLASS_NAMES
from portraitseg.data.synthetic.draw import GENERATOR_VERSION, make_sample, parse_size
from portraitseg.io import atomic_write, sha256_file

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
_GENERATOR = "portraitseg.data.synthetic"
DEFAULT_ROOT = Path("data/synthetic")


def _sample_id(i: int) -> str:
    return f"synth_{i:04d}"


def _split(n: int, test_fraction: float) -> dict[str, list[int]]:
    """The last ``round(n * test_fraction)`` samples (at least one when ``n >= 2``) are test."""
    n_test = 0 if n < 2 else min(n - 1, max(1, round(n * test_fraction)))
    return {"train": list(range(n - n_test)), "test": list(range(n - n_test, n))}


def _planned_files(n: int, test_fraction: float) -> dict[int, dict[str, str]]:
    out = {}
    for split, ids in _split(n, test_fraction).items():
        for i in ids:
            sid = _sample_id(i)
            out[i] = {"image": f"{split}/images/{sid}.png", "label": f"{split}/labels/{sid}.png",
                      "background": f"layers/background/{sid}.png",
                      "foreground": f"layers/foreground/{sid}.png"}
    return out


def _png_bytes(array: np.ndarray) -> bytes:
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[array.ndim if array.ndim == 2 else array.shape[2]]
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG", compress_level=1)  # fast; ~20% larger
    return buf.getvalue()


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The generator manifest of ``root``, or ``None`` if there is none (or it is unreadable)."""
    path = Path(root) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("generator") != _GENERATOR:
        return None
    return manifest


def verify(root: str | os.PathLike) -> list[str]:
    """Check a generated dataset against its manifest; returns the problems (empty if intact)."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        return [f"{root / MANIFEST_NAME}: missing or not a synthetic-dataset manifest"]
    if not manifest.get("complete"):
        return [f"{root}: generation did not finish (manifest marked incomplete)"]
    problems = []
    for rel, digest in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: content differs from the manifest (sha256 mismatch)")
    return problems


def _progress_bar(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), transient=True, console=Console(stderr=True),
                    disable=not (enabled and sys.stderr.isatty()))


def _params(n: int, seed: int, size, test_fraction: float) -> dict:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r}: the number of samples must be a positive integer")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}: must be a non-negative integer")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: must lie in [0, 1)")
    return {"n": int(n), "seed": int(seed), "size": list(parse_size(size)),
            "test_fraction": float(test_fraction)}


def _up_to_date(root: Path, old: dict | None, params: dict, force: bool, n: int) -> bool:
    """Whether ``root`` holds this dataset intact; a complete one of other parameters needs ``force``."""
    if old is None or force:
        return False
    same = old.get("params") == params and old.get("version") == GENERATOR_VERSION
    if same and old.get("complete") and not verify(root):
        log.info("synthetic dataset %s is up to date (%d samples)", root, n)
        return True
    if not same and old.get("complete"):
        raise FileExistsError(
            f"{root} holds a synthetic dataset generated with {old.get('params')} "
            f"(generator version {old.get('version')}); requested {params} (version "
            f"{GENERATOR_VERSION}). Pass force=True (--force) to replace it, or choose "
            "another root.")
    return False


def _refuse_foreign(root: Path, new_paths: list[str], ours: set[str]) -> None:
    """Raise :class:`FileExistsError` if a path the dataset needs holds a file we did not write."""
    foreign = [p for p in new_paths if (root / p).exists() and p not in ours]
    if foreign:
        raise FileExistsError(
            f"{root} already contains files the synthetic generator did not write (e.g. "
            f"{', '.join(str(root / p) for p in foreign[:3])}); refusing to overwrite them. "
            "Choose an empty or new root (e.g. data/synthetic).")


def _claim(root: Path, params: dict, ours: set[str], new_paths: list[str]) -> None:
    """Create ``root``, list every file we may leave behind in an incomplete manifest, drop stale ones."""
    root.mkdir(parents=True, exist_ok=True)
    # Mark everything we may leave behind as ours before touching it, so an interrupted run can
    # be resumed or replaced without mistaking our own files for a user's.
    pending = {"generator": _GENERATOR, "version": GENERATOR_VERSION, "params": params,
               "complete": False, "files": {p: None for p in sorted(ours | set(new_paths))}}
    atomic_write(root / MANIFEST_NAME, json.dumps(pending, indent=1).encode())
    for stale in sorted(ours - set(new_paths)):
        (root / stale).unlink(missing_ok=True)


def _write_samples(root: Path, plan: dict[int, dict[str, str]], params: dict,
                   progress: bool) -> dict[str, str]:
    """Draw and write every planned sample's image, label and layers; returns their sha256 by path."""
    digests: dict[str, str] = {}
    with _progress_bar(progress) as bar:
        task = bar.add_task(f"synthetic portraits -> {root}", total=len(plan))
        for i, files in plan.items():
            sample = make_sample(i, params["seed"], tuple(params["size"]))
            for key, array in (("image", sample.image), ("label", sample.label),
                               ("background", sample.background),
                               ("foreground", sample.foreground)):
                data = _png_bytes(array)  # not fsynced one by one (experiments/output_writer): os.sync below
                atomic_write(root / files[key], data, durable=False)
                digests[files[key]] = hashlib.sha256(data).hexdigest()
            bar.advance(task)
    return digests


def _write_split_lists(root: Path, plan: dict[int, dict[str, str]], n: int,
                       test_fraction: float) -> dict[str, str]:
    """Write ``train.txt`` and ``test.txt``; returns their sha256 by path."""
    digests: dict[str, str] = {}
    for split, ids in _split(n, test_fraction).items():
        lines = "".join(f"{plan[i]['image']} {plan[i]['label']}\n" for i in ids).encode()
        atomic_write(root / f"{split}.txt", lines)
        digests[f"{split}.txt"] = hashlib.sha256(lines).hexdigest()
    return digests


def _write_manifest(root: Path, params: dict, test_fraction: float, digests: dict[str, str]) -> None:
    """Sync the written files to disk, then write the manifest marking the dataset complete."""
    manifest = {"generator": _GENERATOR, "version": GENERATOR_VERSION, "params": params,
                "complete": True, "classes": list(CLASS_NAMES),
                "splits": {k: [_sample_id(i) for i in v]
                           for k, v in _split(params["n"], test_fraction).items()},
                "files": dict(sorted(digests.items()))}
    if hasattr(os, "sync"):
        os.sync()  # every sample on disk before the manifest says the set is complete
    atomic_write(root / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())


def generate(root: str | os.PathLike = DEFAULT_ROOT, n: int = 64, seed: int = 0,
             size: int | tuple[int, int] = 256, force: bool = False,
             test_fraction: float = 0.2, progress: bool = False) -> Path:
    """Write ``n`` synthetic portraits and their layers under ``root`` (HELEN* layout).

    An intact dataset generated with the same parameters is reused as is. A dataset generated with
    other parameters is replaced only with ``force=True`` (which also regenerates an intact one).
    Only files listed in this generator's manifest are ever overwritten or deleted: a file of
    someone else's at a path the dataset needs is an error, and unrelated files are left alone.

    Args:
        root: output folder (created if missing).
        n: number of portraits; the last ``round(n * test_fraction)`` form the test split.
        seed: sample ``i`` is drawn from ``(seed, i)`` only.
        size: ``S`` or ``(H, W)`` in pixels.
        force: regenerate even if the dataset exists.
        test_fraction: share of samples listed in ``test.txt``.
        progress: show a progress bar (when stderr is a terminal).

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    root = Path(root)
    params = _params(n, seed, size, test_fraction)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root}: exists and is not a directory; choose another root")
    old = read_manifest(root)
    if _up_to_date(root, old, params, force, n):
        return root

    plan = _planned_files(params["n"], test_fraction)
    new_paths = [p for files in plan.values() for p in files.values()] + ["train.txt", "test.txt"]
    ours = set(old["files"]) if old is not None else set()
    _refuse_foreign(root, new_paths, ours)

    t0 = time.perf_counter()
    _claim(root, params, ours, new_paths)
    digests = _write_samples(root, plan, params, progress)
    digests.update(_write_split_lists(root, plan, params["n"], test_fraction))
    _write_manifest(root, params, test_fraction, digests)
    log.info("generated %d synthetic portraits (%dx%d) in %s in %.1f s", params["n"],
             *params["size"], root, time.perf_counter() - t0)
    return root


def ensure_synthetic(root: str | os.PathLike = DEFAULT_ROOT, n: int = 64, seed: int = 0,
                     size: int | tuple[int, int] = 256, test_fraction: float = 0.2) -> Path:
    """Return ``root`` holding exactly this synthetic dataset, generating it on first use.

    Reuses an intact dataset with the same parameters; replaces (only) our own files when the
    parameters or the generator version differ or files were damaged.
    """
    old = read_manifest(root)
    params = _params(n, seed, size, test_fraction)
    stale = old is not None and (old.get("params") != params
                                 or old.get("version") != GENERATOR_VERSION)
    return generate(root, n, seed, size, force=stale, test_fraction=test_fraction)


def read_layers(root: str | os.PathLike, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Load the ground-truth layers of one sample.

    Returns:
        ``background`` ``(H, W, 3)`` uint8 RGB and ``foreground`` ``(H, W, 4)`` uint8 RGBA.
    """
    root = Path(root)
    paths = [root / "layers" / kind / f"{sample_id}.png" for kind in ("background", "foreground")]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such layer; generate the dataset with "
                                    f"`python -m portraitseg.data synth --root {root}`")
    with Image.open(paths[0]) as bg_img, Image.open(paths[1]) as fg_img:
        return np.asarray(bg_img.convert("RGB")).copy(), np.asarray(fg_img.convert("RGBA")).copy()
