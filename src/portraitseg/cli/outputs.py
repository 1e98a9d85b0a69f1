"""Which files ``portraitseg render`` reads and what it names its outputs.

:func:`expand_inputs` turns files, folders and glob patterns into the photos to render;
:class:`OutputNamer` picks each photo's output names (``<stem>_portrait<ext>``, ``_stages.jpg``,
``_alpha.png``), never an input's, never an existing file without ``overwrite``, and reserves
them on disk so that runs sharing a folder never write one name twice. The writing itself is
:func:`portraitseg.io.atomic_write_all`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from portraitseg.io import IMAGE_SUFFIXES, WRITE_FORMATS, remove_stale_temporaries, same_file, temporary_name
from portraitseg.video import VIDEO_OUTPUT_SUFFIX, VIDEO_SUFFIXES, is_clip

#: Tags of the output names; folders are expanded without the files named like them.
PORTRAIT_TAG = "_portrait"
STAGES_TAG = "_stages"
ALPHA_TAG = "_alpha"
_OUTPUT_NAME = re.compile(
    rf"({re.escape(PORTRAIT_TAG)}|{re.escape(STAGES_TAG)}|{re.escape(ALPHA_TAG)})(_\d+)?$")


def expand_inputs(
    specs: Sequence[str], recursive: bool = False, outdir: Path | None = None
) -> tuple[list[tuple[Path, Path]], list[str], int]:
    """Expand files, folders and glob patterns into ``(path, relative_output_dir)`` pairs.

    Folders contribute the files with an image or video suffix (:data:`IMAGE_SUFFIXES`,
    :data:`portraitseg.video.VIDEO_SUFFIXES`), sorted, and with
    ``recursive`` those of their sub-folders (the sub-folder is kept under the output folder).
    Glob patterns (``*``, ``?``, ``[``) are expanded here too, for shells that do not; ``**``
    matches sub-folders with ``recursive``. Explicit files and glob matches are taken whatever
    their suffix. Files inside ``outdir`` named like this command's outputs (``*_portrait*``,
    ``*_stages*``) are skipped when folders are expanded, so a re-run does not render portraits
    of portraits. Duplicates are dropped.

    Returns:
        ``(items, missing, skipped)``: the inputs in order, the specs that matched nothing, and
        the number of earlier outputs skipped.
    """
    items: list[tuple[Path, Path]] = []
    missing: list[str] = []
    skipped = 0
    seen: set[Path] = set()
    out_resolved = outdir.resolve() if outdir is not None else None

    def add(path: Path, rel: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            items.append((path, rel))

    def add_folder(folder: Path) -> None:
        nonlocal skipped
        for path in sorted(folder.glob("**/*" if recursive else "*")):
            if not path.is_file() or path.suffix.lower() not in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES):
                continue
            if out_resolved is not None and _OUTPUT_NAME.search(path.stem) and (
                path.resolve().parent == out_resolved or out_resolved in path.resolve().parents
            ):
                skipped += 1
                continue
            add(path, path.parent.relative_to(folder))

    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            add_folder(path)  # an empty folder is not an error: there is nothing to do
        elif path.exists():
            add(path, Path())
        elif glob.has_magic(spec):
            matches = sorted(glob.glob(os.path.expanduser(spec), recursive=recursive))
            if not matches:
                missing.append(spec)
            for match in matches:
                m = Path(match)
                if m.is_dir():
                    add_folder(m)
                elif m.is_file():
                    add(m, Path())
        else:
            missing.append(spec)
    return items, missing, skipped


def _output_suffix(path: Path) -> str:
    if is_clip(path):
        return VIDEO_OUTPUT_SUFFIX
    return path.suffix if path.suffix.lower() in WRITE_FORMATS else ".png"


def portrait_path(src: Path, folder: Path) -> Path:
    """The first-choice portrait name of ``src`` in ``folder`` (``<stem>_portrait<ext>``, no number)."""
    return folder / f"{src.stem}{PORTRAIT_TAG}{_output_suffix(src)}"


class OutputNamer:
    """Chooses output paths that never hit an input, nor an existing file unless ``overwrite``.

    ``<stem>_portrait<ext>`` (and ``<stem>_stages.jpg``); if taken, ``<stem>_portrait_1<ext>``,
    ``_2``... (the portrait and its stages figure share the number). A file written earlier in
    the same run is never replaced, even with ``overwrite``.

    A new name is reserved on disk the moment it is chosen: an empty placeholder created with
    ``O_CREAT | O_EXCL``, which exactly one process can win, so two runs writing into one folder
    at once never pick the same name, and locked (``flock``) while this process lives. The
    render then replaces the placeholders atomically (:func:`portraitseg.io.atomic_write_all`);
    :meth:`release` removes the placeholders of outputs that were not written. An empty file
    under an output name that nobody holds locked is the debris of a run that was killed: it is
    reused, so a re-run does not number its outputs ``_1``.
    """

    def __init__(self, inputs: Iterable[Path], overwrite: bool) -> None:
        self.protected = {p.resolve() for p in inputs}
        self.claimed: set[Path] = set()
        self.overwrite = overwrite
        self.placeholders: dict[Path, int] = {}  # path -> open, locked descriptor
        self.cleaned: set[Path] = set()  # folders whose killed runs' temporary files are removed

    @staticmethod
    def _lock(fd: int) -> bool:
        """Lock a placeholder for this process; False if another live process holds it."""
        try:
            import fcntl
        except ImportError:  # no flock (Windows): placeholders are never taken over
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    @staticmethod
    def _placeholder(path: Path) -> str | None:
        """``"held"``: an empty file a live run holds locked (its placeholder); ``"debris"``: an
        empty file nobody holds (left by a run that was killed); None: anything else."""
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size != 0:
                return None
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            import fcntl
        except ImportError:
            os.close(fd)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return "held"
        finally:
            os.close(fd)  # closing drops the probe's lock
        return "debris"

    def _free(self, path: Path) -> bool:
        key = path.resolve()
        if key in self.protected or key in self.claimed:
            return False
        if os.path.lexists(path):
            # a hard link or symlink to an input is the input (even an empty one)
            if any(same_file(path, p) for p in self.protected):
                return False
            state = self._placeholder(path)
            if state is not None:
                return state == "debris"
            if not self.overwrite or not path.is_file():
                return False
        return True

    def _reserve(self, path: Path) -> bool:
        """Claim ``path`` on disk: an existing file (``overwrite`` only, checked by :meth:`_free`)
        is taken as is; a new one is created empty, exclusively (False if another process won)."""
        if os.path.lexists(path) and self._placeholder(path) == "debris":
            try:  # take the killed run's placeholder over
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
            except OSError:
                return False
            if self._lock(fd) and os.fstat(fd).st_size == 0:
                self.placeholders[path] = fd
                return True
            os.close(fd)
            return False
        if self.overwrite and os.path.lexists(path):
            return True
        # created locked under a private name, then linked to its name: link() fails if the name
        # exists (exclusive, like O_EXCL), and the placeholder is never seen unlocked
        private = temporary_name(path)
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            self._lock(fd)
            os.link(private, path)
        except FileExistsError:  # another run's placeholder or file appeared since _free: it wins
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        finally:
            with contextlib.suppress(OSError):
                private.unlink()
        self.placeholders[path] = fd
        return True

    def _unreserve(self, path: Path) -> None:
        fd = self.placeholders.pop(path, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                if path.stat().st_size == 0:
                    path.unlink()
            os.close(fd)

    def __call__(self, src: Path, folder: Path, stages: bool) -> tuple[Path, Path | None]:
        """``(portrait, stages figure or None)`` for ``src`` (see :meth:`reserve`)."""
        portrait, figure, _ = self.reserve(src, folder, stages)
        return portrait, figure

    def reserve(
        self, src: Path, folder: Path, stages: bool, alpha: bool = False
    ) -> tuple[Path, Path | None, Path | None]:
        """``(portrait, stages figure or None, alpha matte or None)``, all sharing one number
        (``<stem>_alpha<num>.png`` is the matte), each reserved on disk. The first time a folder is
        used, the temporary files a killed run left in it are removed
        (:func:`portraitseg.io.remove_stale_temporaries`)."""
        if folder not in self.cleaned:
            remove_stale_temporaries(folder)
            self.cleaned.add(folder)
        ext = _output_suffix(src)
        n = 0
        while True:
            num = f"_{n}" if n else ""
            portrait = folder / f"{src.stem}{PORTRAIT_TAG}{num}{ext}"
            extras = [folder / f"{src.stem}{STAGES_TAG}{num}.jpg" if stages else None,
                      folder / f"{src.stem}{ALPHA_TAG}{num}.png" if alpha else None]
            wanted = [portrait, *(p for p in extras if p is not None)]
            if all(self._free(p) for p in wanted):
                taken: list[Path] = []
                for path in wanted:
                    if not self._reserve(path):
                        break
                    taken.append(path)
                else:
                    self.claimed.update(p.resolve() for p in wanted)
                    return portrait, extras[0], extras[1]
                for path in taken:
                    self._unreserve(path)
            n += 1

    def written(self, *paths: Path | None) -> None:
        """Mark outputs as written: their placeholders are no longer ours to remove."""
        for path in paths:
            fd = self.placeholders.pop(path, None)
            if fd is not None:
                os.close(fd)

    def release(self, *paths: Path | None) -> None:
        """Remove the placeholders of ``paths`` (all of them if none are given) still empty."""
        for path in list(paths or self.placeholders):
            if path is not None:
                self._unreserve(path)



__all__ = ["ALPHA_TAG", "PORTRAIT_TAG", "STAGES_TAG", "OutputNamer", "expand_inputs", "portrait_path"]
