"""portraitseg.subject.people on synthetic mattes: blobs, touching people split by face seeds,
the focus, the main subjects."""

from __future__ import annotations

import argparse

import pytest
import torch

from portraitseg.argtypes import FocusError, parse_focus
from portraitseg.subject.people import (
    PeopleError,
    PeopleOptions,
    choose_people,
    find_people,
    focus_pixels,
    heads_on_top,
    select_people,
)

H, W = 120, 160
PHOTO = (H, W)


def person(matte: torch.Tensor, x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    """Draw a rectangular person into a ``(1, 1, H, W)`` matte."""
    matte[..., y0:y1, x0:x1] = 1.0
    return matte


def no_faces(m: int = 2) -> torch.Tensor:
    return torch.zeros(1, m, 4)


def kept_fraction(alpha: torch.Tensor, x0: int, y0: int, x1: int, y1: int) -> float:
    return float(alpha[..., y0:y1, x0:x1].mean())


def test_two_blobs_are_two_people_and_focus_keeps_one():
    matte = person(person(torch.zeros(1, 1, H, W), 10, 20, 50, 110), 100, 20, 140, 110)
    found = find_people(matte, no_faces(), PHOTO)
    ids = found.ids[0, 0]
    assert ids[60, 30] > 0 and ids[60, 120] > 0 and ids[60, 30] != ids[60, 120]
    assert ids[5, 5] == 0
    alpha, notes = select_people(matte.clone(), matte, no_faces(), PHOTO, focus=(120, 60))
    assert notes == []
    assert kept_fraction(alpha, 100, 20, 140, 110) > 0.99
    assert kept_fraction(alpha, 10, 20, 50, 110) < 0.01
    # the same click as fractions of the width and height
    alpha2, _ = select_people(matte.clone(), matte, no_faces(), PHOTO, focus=(0.75, 0.5))
    assert torch.equal(alpha, alpha2)


def test_touching_people_split_by_face_seeds():
    # two people joined at the shoulders: one blob, two faces
    matte = person(person(torch.zeros(1, 1, H, W), 20, 10, 81, 118), 80, 10, 140, 118)
    faces = torch.tensor([[[35.0, 12.0, 65.0, 42.0], [95.0, 12.0, 125.0, 42.0]]])
    found = find_people(matte, faces, PHOTO)
    assert found.blobs[0, 0, 60, 30] == found.blobs[0, 0, 60, 130]  # one blob
    left, right = found.ids[0, 0, 60, 30], found.ids[0, 0, 60, 130]
    assert left > 0 and right > 0 and left != right
    alpha, _ = select_people(matte.clone(), matte, faces, PHOTO, focus=(40, 80))
    assert kept_fraction(alpha, 20, 10, 70, 118) > 0.95
    assert kept_fraction(alpha, 92, 10, 140, 118) < 0.05
    # without faces the blob is one person: a click keeps both
    alpha, _ = select_people(matte.clone(), matte, no_faces(), PHOTO, focus=(40, 80))
    assert kept_fraction(alpha, 92, 10, 140, 118) > 0.95


def test_focus_outside_any_person_notes_and_keeps_main_subjects():
    matte = person(person(torch.zeros(1, 1, H, W), 10, 10, 70, 118), 120, 80, 130, 100)  # big + small
    alpha, notes = select_people(matte.clone(), matte, no_faces(), PHOTO, focus=(100, 5))
    assert len(notes) == 1 and "no person at 100,5" in notes[0] and "main subjects" in notes[0]
    assert kept_fraction(alpha, 10, 10, 70, 118) > 0.99
    assert kept_fraction(alpha, 120, 80, 130, 100) < 0.01
    # outside the photo: the same note, no crash
    _, notes = select_people(matte.clone(), matte, no_faces(), PHOTO, focus=(5000, 5000))
    assert "no person at 5000,5000" in notes[0]
    # near a person (within the tolerance): that person
    alpha, notes = select_people(matte.clone(), matte, no_faces(), PHOTO, focus=(133, 90))
    assert notes == [] and kept_fraction(alpha, 120, 80, 130, 100) > 0.99


def test_main_subjects_drop_small_far_people_keep_large_ones():
    matte = torch.zeros(1, 1, H, W)
    person(matte, 40, 10, 80, 118)     # the subject
    person(matte, 100, 60, 110, 90)    # far: a third of its height
    person(matte, 120, 20, 150, 110)   # near: about as large
    alpha, notes = select_people(matte.clone(), matte, no_faces(), PHOTO)
    assert notes == []
    assert kept_fraction(alpha, 40, 10, 80, 118) > 0.99
    assert kept_fraction(alpha, 120, 20, 150, 110) > 0.99
    assert kept_fraction(alpha, 100, 60, 110, 90) < 0.01
    # everyone
    alpha, _ = select_people(matte.clone(), matte, no_faces(), PHOTO, people="all")
    assert torch.equal(alpha, matte)


def test_a_small_person_touching_the_subject_is_kept():
    matte = person(person(torch.zeros(1, 1, H, W), 40, 10, 80, 118), 80, 70, 92, 110)
    alpha, _ = select_people(matte.clone(), matte, no_faces(), PHOTO)
    assert kept_fraction(alpha, 82, 70, 92, 110) > 0.99


def test_soft_edges_go_with_their_person():
    matte = torch.zeros(1, 1, H, W)
    person(matte, 40, 10, 80, 118)
    person(matte, 120, 60, 130, 90)
    matte[..., 60:90, 130:133] = 0.3  # the far person's soft edge, under the threshold
    alpha, _ = select_people(matte.clone(), matte, no_faces(), PHOTO)
    assert kept_fraction(alpha, 130, 60, 133, 90) < 0.05


def test_batch_focus_list_and_errors():
    matte = person(torch.zeros(2, 1, H, W), 10, 20, 50, 110)
    faces = torch.zeros(2, 1, 4)
    alpha, notes = select_people(matte.clone(), matte, faces, PHOTO, focus=[None, (150, 5)])
    assert len(notes) == 1
    with pytest.raises(PeopleError, match="one point for a batch of 2"):
        select_people(matte, matte, faces, PHOTO, focus=(1, 2))
    with pytest.raises(PeopleError, match="3 entries for 2 photos"):
        select_people(matte, matte, faces, PHOTO, focus=[None, None, None])
    with pytest.raises(PeopleError, match="people='some'"):
        select_people(matte, matte, faces, PHOTO, people="some")
    with pytest.raises(PeopleError, match=">= 0"):
        focus_pixels((-1, 2), PHOTO)
    with pytest.raises(PeopleError, match="matte must be"):
        find_people(torch.zeros(1, H, W), faces[:1], PHOTO)
    with pytest.raises(PeopleError, match="main_ratio"):
        PeopleOptions(main_ratio=2.0)


def test_focus_pixels_ints_are_pixels_floats_fractions():
    assert focus_pixels((1, 1), PHOTO) == (1.0, 1.0)
    assert focus_pixels((0.5, 0.25), PHOTO) == (80.0, 30.0)
    assert focus_pixels((80.0, 30), PHOTO) == (80.0, 30.0)


def test_no_matte_keeps_alpha_with_a_note_for_focus():
    alpha = torch.rand(1, 1, H, W)
    out, notes = select_people(alpha, None, no_faces(), PHOTO, focus=(3, 3))
    assert out is alpha and "no person matte" in notes[0]
    out, notes = select_people(alpha, None, no_faces(), PHOTO)
    assert out is alpha and notes == []


def test_choose_people_all_keeps_everyone_present():
    matte = person(person(torch.zeros(1, 1, H, W), 10, 10, 70, 118), 120, 80, 130, 100)
    found = find_people(matte, no_faces(), PHOTO)
    kept, _ = choose_people(found, PHOTO, None, "all")
    assert int(kept.sum()) == 2
    kept, _ = choose_people(found, PHOTO, None, "main")
    assert int(kept.sum()) == 1


def test_parse_focus_reads_pixels_and_fractions():
    assert parse_focus("640,360") == (640, 360) and isinstance(parse_focus("640,360")[0], int)
    assert parse_focus(" 0.5 , 0.4") == (0.5, 0.4)
    assert focus_pixels(parse_focus("1,1.0"), PHOTO) == (1.0, 120.0)  # a pixel, then a fraction
    for text, words in (("a,b", "'a' is not a number"), ("12", "not X,Y"), ("1,2,3", "not X,Y"),
                        ("1.5,2", "a decimal is a fraction"), ("-1,3", "negative"), ("nan,1", "fraction")):
        with pytest.raises(FocusError, match=words):
            parse_focus(text)
    with pytest.raises(argparse.ArgumentTypeError):  # argparse shows it as a usage error
        parse_focus("x")


def test_height_measure_keeps_a_tall_thin_person_area_does_not():
    matte = torch.zeros(1, 1, H, W)
    person(matte, 10, 10, 70, 118)     # wide subject
    person(matte, 120, 20, 126, 110)   # tall and thin: most of the height, a small area
    heights = PeopleOptions(measure="height")
    alpha, _ = select_people(matte.clone(), matte, no_faces(), PHOTO, options=heights)
    assert kept_fraction(alpha, 120, 20, 126, 110) > 0.99
    alpha, _ = select_people(matte.clone(), matte, no_faces(), PHOTO)
    assert kept_fraction(alpha, 120, 20, 126, 110) < 0.01


def test_specks_of_the_matte_are_no_people():
    matte = person(torch.zeros(1, 1, H, W), 40, 10, 80, 118)
    matte[..., 5, 5] = matte[..., 100, 150] = 1.0  # single pixels over the threshold
    found = find_people(matte, no_faces(), PHOTO)
    assert found.ids[0, 0, 5, 5] == 0 and found.ids[0, 0, 100, 150] == 0
    alpha, _ = select_people(matte.clone(), matte, no_faces(), PHOTO)
    assert torch.equal(alpha, matte)


def test_touching_people_with_heads_at_different_heights():
    # the right person's head is lower, next to the left person's shoulder: each keeps its own body
    matte = person(person(torch.zeros(1, 1, H, W), 20, 10, 81, 118), 78, 40, 140, 118)
    faces = torch.tensor([[[38.0, 12.0, 62.0, 34.0], [97.0, 42.0, 121.0, 64.0]]])
    alpha, _ = select_people(matte.clone(), matte, faces, PHOTO, focus=(30, 100))
    assert kept_fraction(alpha, 20, 10, 76, 118) > 0.95
    assert kept_fraction(alpha, 84, 40, 140, 118) < 0.05
    alpha, _ = select_people(matte.clone(), matte, faces, PHOTO, focus=(130, 100))
    assert kept_fraction(alpha, 20, 10, 70, 118) < 0.05


@pytest.mark.parametrize(("face", "kept"), [(8.0, False), (20.0, True)])
def test_a_person_overlapping_the_subject_is_judged_by_face_size(face, kept):
    # the subject (face 24 px wide) and a smaller person joined to it in the picture: one blob
    matte = person(person(torch.zeros(1, 1, H, W), 30, 10, 90, 118), 90, 50, 115, 100)
    small = [102.5 - face / 2, 52.0, 102.5 + face / 2, 52.0 + face]
    faces = torch.tensor([[[48.0, 12.0, 72.0, 36.0], small]])
    alpha, _ = select_people(matte.clone(), matte, faces, PHOTO)
    assert kept_fraction(alpha, 30, 10, 78, 118) > 0.99  # the split runs between the two bodies
    behind = kept_fraction(alpha, 96, 50, 115, 100)
    assert behind > 0.95 if kept else behind < 0.05


def test_a_face_inside_a_body_splits_no_one():
    # a face printed on the subject's shirt: a body above it, so not a head; the subject stays whole
    matte = person(torch.zeros(1, 1, H, W), 40, 10, 100, 118)
    faces = torch.tensor([[[58.0, 12.0, 82.0, 36.0], [62.0, 60.0, 74.0, 72.0]]])
    assert heads_on_top(faces, matte > 0.5, PHOTO).tolist() == [[True, False]]
    found = find_people(matte, faces, PHOTO)
    assert torch.unique(found.ids).numel() == 2  # background and one person
    alpha, _ = select_people(matte.clone(), matte, faces, PHOTO)
    assert torch.equal(alpha, matte)
