"""Code, docs and results speak about the project itself: no words about how it was being made.

A reader of the repository cannot know who did what while it was made, or in which working period a
number was taken; a measurement states its conditions in plain words instead ("2-core VM, a training
job running beside it", "no GPU was available"). The patterns and examples below are spelled so that
they do not match themselves (``[ ]`` for a space, examples split into adjacent literals): the whole
tracked tree, this file included, is searched with the same words by other tools.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Words about the making of the project, not the project. Kept precise: "user agent", a
#: "TensorBoard session", an onnxruntime ``InferenceSession`` or an "issue" in general are fine.
PROCESS_WORDS = re.compile(
    r"closing[ ]note|helper-[0-9]|helper[ ]agents?|helpers' |\bthe[ ]lead\b|\blead[']s\b|this[ ]session"
    r"|lent[ ]to[ ]this|not[ ]drawn|\bstop-?[0-9]+\b|\bissue #?[0-9]+|the issue's|the author's tests",
    re.IGNORECASE,
)


def tracked_text_files() -> list[Path]:
    """Every file git tracks that decodes as UTF-8 text (this file excepted: it holds the list)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    files = []
    for name in names.decode().split("\0"):
        path = REPO / name
        if name and path.is_file() and path.resolve() != Path(__file__).resolve():
            try:
                path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            files.append(path)
    return files


def test_the_pattern_finds_process_words_and_spares_ordinary_ones() -> None:
    found = ["see the st" "op-9 clos" "ing note", "the le" "ad's training run", "ran in this se" "ssion",
             "no GPU was lent to this ta" "sk", "`status`: not dr" "awn", "Goal (issue 6)",
             "help" "er-3 ran it"]
    spared = ["User-Agent header", "a TensorBoard session", "ort.InferenceSession(path)",
              "a known issue with OpenCV", "a lead-in sentence", "procedurally drawn portraits"]
    assert all(PROCESS_WORDS.search(text) for text in found)
    assert not any(PROCESS_WORDS.search(text) for text in spared)


def test_no_process_words_in_the_tracked_tree() -> None:
    hits = []
    for path in tracked_text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if match := PROCESS_WORDS.search(line):
                hits.append(f"{path.relative_to(REPO)}:{number}: {match.group(0)!r} in {line.strip()[:100]}")
    assert not hits, ("say what ran and under which conditions, in plain words:\n" + "\n".join(hits))
