"""Whole-person subject from a face parse (subject/grabcut.py): bodies, edge cases, selective classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from portraitseg.classes import CLASS_NAMES, NUM_CLASSES, class_ids
from portraitseg.data.synthetic import make_sample
from portraitseg.render import render_portrait
from portraitseg.sizing import long_side
from portraitseg.subject.grabcut import (
    combine_person,
    face_geometry,
    find_faces,
    person_alpha,
    torso_prior,
)

HAIR, SKIN = CLASS_NAMES.index("hair"), CLASS_NAMES.index("skin")


def tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 photo ``(H, W, 3)`` + label ``(H, W)`` -> image ``(1, 3, H, W)`` and one-hot probs."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
    probs = F.one_hot(torch.from_numpy(np.ascontiguousarray(label)).long(), NUM_CLASSES)
    return x, probs.permute(2, 0, 1)[None].float()


@pytest.fixture(scope="module")
def portrait():
    """A 128 px synthetic portrait: the foreground layer has the whole person, the label only
    the face and hair (neck and clothes are background)."""
    return make_sample(1, seed=3, size=128)


def body_pixels(sample) -> np.ndarray:
    """Person pixels the face parse calls background: neck, shoulders, clothes."""
    return (sample.alpha > 0.5) & (sample.label == 0)


def test_single_face_torso_becomes_subject(portrait):
    x, probs = tensors(portrait.image, portrait.label)
    body = body_pixels(portrait)
    assert body.sum() > 0.1 * body.size, "the synthetic person must have a body the labels call background"
    alpha, warnings = person_alpha(x, probs)
    assert warnings == []
    a = alpha[0, 0].numpy()
    assert (a[body] > 0.5).mean() > 0.9, "the body below the face must be in the subject"
    outside = portrait.alpha < 0.02
    assert (a[outside] > 0.5).mean() < 0.1, "the background must stay background"
    face_only = probs[0, 1:].sum(0).numpy()
    assert (face_only[body] > 0.5).mean() == 0, "subject=face (the parse) misses the body"


def test_rendered_body_stays_sharp(portrait):
    x, probs = tensors(portrait.image, portrait.label)
    alpha, _ = person_alpha(x, probs)
    out_person, used = render_portrait(x, alpha=alpha, blur="gaussian", strength=0.03)
    out_face, _ = render_portrait(x, probs=probs, blur="gaussian", strength=0.03)
    assert used.shape == (1, 1, 128, 128)
    body = torch.from_numpy(body_pixels(portrait))
    err_person = (out_person - x).abs().mean(1)[0][body].mean()
    err_face = (out_face - x).abs().mean(1)[0][body].mean()
    assert err_person < 0.3 * err_face, (err_person, err_face)


def side_by_side(left, right) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.concatenate([left.image, right.image], 1)
    label = np.concatenate([left.label, right.label], 1)
    truth = np.concatenate([left.alpha, right.alpha], 1)
    return image, label, truth


def test_two_faces_two_bodies():
    image, label, truth = side_by_side(make_sample(2, seed=3, size=128), make_sample(5, seed=3, size=128))
    faces, small = find_faces(label)
    assert len(faces) == 2 and small == []
    alpha, warnings = person_alpha(*tensors(image, label), work_size=256)
    assert warnings == []
    a = alpha[0, 0].numpy()
    body = (truth > 0.5) & (label == 0)
    for half in (slice(0, 128), slice(128, 256)):
        part = body[:, half]
        assert part.sum() > 500
        assert (a[:, half][part] > 0.5).mean() > 0.85, "each face seeds its own body"


def test_face_cut_by_the_border():
    s = make_sample(1, seed=3, size=128)
    faces, _ = find_faces(s.label)
    cx = int(round(faces[0].centroid[0]))
    keep = slice(cx - 4, None)  # the left half of the face is cut off
    image, label, truth = s.image[:, keep], s.label[:, keep], s.alpha[:, keep]
    cut_faces, _ = find_faces(label)
    assert len(cut_faces) == 1 and cut_faces[0].cut
    assert cut_faces[0].size == pytest.approx(faces[0].size, rel=0.25), "size survives the cut"
    alpha, warnings = person_alpha(*tensors(image, label))
    assert warnings == []
    a = alpha[0, 0].numpy()
    body = (truth > 0.5) & (label == 0)
    assert (a[body] > 0.5).mean() > 0.8


def test_face_cut_at_the_top_keeps_its_size_and_chin():
    s = make_sample(2, seed=3, size=128)
    (face,), _ = find_faces(s.label)
    top = int(face.centroid[1])
    (cut,), _ = find_faces(s.label[top:])
    assert cut.size == pytest.approx(face.size, rel=0.3)
    assert cut.chin[1] + top == pytest.approx(face.chin[1], abs=2)


def test_tiny_face_falls_back_to_face_mask_with_warning():
    s = make_sample(0, seed=3, size=64)
    image = np.full((256, 256, 3), 90, np.uint8)
    label = np.zeros((256, 256), np.uint8)
    small = (slice(100, 116), slice(100, 116))  # a 16 px portrait, face ~6 % of 256 high -> < 8 % limit
    import cv2

    image[small] = cv2.resize(s.image, (16, 16), interpolation=cv2.INTER_AREA)
    label[small] = cv2.resize(s.label, (16, 16), interpolation=cv2.INTER_NEAREST)
    x, probs = tensors(image, label)
    alpha, warnings = person_alpha(x, probs, min_face=0.08, work_size=256)
    assert len(warnings) == 1 and "too small" in warnings[0] and "face-parse mask" in warnings[0]
    face_mask = probs[:, 1:].sum(1, keepdim=True)
    assert torch.equal(alpha, face_mask), "the fallback is exactly the face-parse mask"


def test_small_face_beside_a_big_one_gets_no_body():
    big = make_sample(2, seed=3, size=128)
    image = np.concatenate([big.image, np.full((128, 128, 3), 90, np.uint8)], 1)
    label = np.concatenate([big.label, np.zeros((128, 128), np.uint8)], 1)
    import cv2

    tiny = make_sample(0, seed=3, size=64)
    image[20:32, 180:192] = cv2.resize(tiny.image, (12, 12), interpolation=cv2.INTER_AREA)
    label[20:32, 180:192] = cv2.resize(tiny.label, (12, 12), interpolation=cv2.INTER_NEAREST)
    faces, small = find_faces(label, min_face=0.1)
    assert len(faces) == 1 and len(small) == 1
    alpha, warnings = person_alpha(*tensors(image, label), min_face=0.1)
    assert len(warnings) == 1 and "small face" in warnings[0]
    a = alpha[0, 0].numpy()
    assert (a[40:, 176:196] > 0.5).mean() < 0.05, "no body below the small face"


def test_no_face_warns_and_leaves_the_photo_sharp():
    x = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    probs = torch.zeros(1, NUM_CLASSES, 32, 40)
    probs[:, 0] = 1
    alpha, warnings = person_alpha(x, probs)
    assert len(warnings) == 1 and "no face found" in warnings[0] and "no blur" in warnings[0]
    assert torch.equal(alpha, torch.ones_like(alpha))
    portrait, _ = render_portrait(x, alpha=alpha)
    assert torch.allclose(portrait, x, atol=1e-6)


def test_skin_without_facial_features_is_not_a_face():
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    label = np.zeros((64, 64), np.uint8)
    label[10:40, 20:44] = SKIN  # a skin-coloured arm predicted as skin: no eyes, no mouth
    _, probs = tensors(np.zeros((64, 64, 3), np.uint8), label)
    alpha, warnings = person_alpha(x, probs)
    assert len(warnings) == 1 and "shows no face" in warnings[0]
    assert torch.equal(alpha, probs[:, 1:].sum(1, keepdim=True))


def test_parse_without_features_still_finds_the_face_next_to_hair(portrait):
    """A weak model (or a low resolution) may predict only skin and hair: still a face."""
    label = portrait.label.copy()
    label[(label > 0) & (label != HAIR)] = SKIN
    x, probs = tensors(portrait.image, label)
    alpha, warnings = person_alpha(x, probs)
    assert warnings == []
    assert (alpha[0, 0].numpy()[body_pixels(portrait)] > 0.5).mean() > 0.9


def test_keep_subset_applies_inside_the_person(portrait):
    x, probs = tensors(portrait.image, portrait.label)
    keep = class_ids("hair")
    alpha, _ = person_alpha(x, probs, keep)
    a = alpha[0, 0].numpy()
    face = np.isin(portrait.label, [c for c in range(1, NUM_CLASSES) if c != HAIR])
    assert a[face].max() == 0, "non-kept face classes are blurred even inside the person"
    assert a[portrait.label == HAIR].min() == 1
    assert (a[body_pixels(portrait)] > 0.5).mean() > 0.9, "the body stays in the subject"
    eyes = class_ids("eyes,hair")
    a2 = person_alpha(x, probs, eyes)[0][0, 0].numpy()
    assert a2[np.isin(portrait.label, eyes)].min() == 1 and a2[portrait.label == SKIN].max() == 0


def test_combine_person_union_and_selective_classes():
    probs = torch.zeros(1, NUM_CLASSES, 2, 3)
    probs[0, 0, 0] = 1  # row 0: background
    probs[0, SKIN, 1, :2] = 1  # row 1: skin, skin, hair
    probs[0, HAIR, 1, 2] = 1
    person = torch.tensor([[[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]]])
    all_kept = combine_person(person, probs, class_ids(None))
    assert all_kept.flatten().tolist() == [1.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    hair_only = combine_person(person, probs, (HAIR,))
    assert hair_only.flatten().tolist() == [1.0, 0.0, 0.5, 0.0, 0.0, 1.0]
    assert torch.equal(combine_person(person, None), person)


def test_combine_person_is_differentiable():
    person = torch.rand(1, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    probs = torch.rand(1, NUM_CLASSES, 3, 4, dtype=torch.float64).softmax(1).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, q: combine_person(p, q, (1, 10)), (person, probs))


@pytest.mark.parametrize("hw", [(64, 64), (96, 160), (300, 200)])
def test_shapes_ranges_and_working_grid(hw):
    s = make_sample(4, seed=3, size=hw)
    x, probs = tensors(s.image, s.label)
    probs = F.interpolate(probs, scale_factor=0.5, mode="bilinear")  # model resolution
    alpha, warnings = person_alpha(x, probs, work_size=128)
    assert isinstance(warnings, list)
    expected = long_side(*hw, 128, upscale=False)
    assert max(expected) == min(128, max(hw))
    assert alpha.shape == (1, 1, *expected) and alpha.dtype == x.dtype
    assert 0 <= float(alpha.min()) and float(alpha.max()) <= 1
    assert math.isclose(expected[0] / expected[1], hw[0] / hw[1], rel_tol=0.03)
    portrait, used = render_portrait(x, alpha=alpha)
    assert portrait.shape == x.shape and used.shape == (1, 1, *hw)


def test_batch_and_dtype():
    samples = [make_sample(i, seed=3, size=64) for i in (0, 1)]
    x = torch.cat([tensors(s.image, s.label)[0] for s in samples]).double()
    probs = torch.cat([tensors(s.image, s.label)[1] for s in samples])
    probs[1] = 0
    probs[1, 0] = 1  # the second image has no face
    alpha, warnings = person_alpha(x, probs)
    assert alpha.shape == (2, 1, 64, 64) and alpha.dtype == torch.float64
    assert len(warnings) == 1 and warnings[0].startswith("image 1: ")


def test_deterministic(portrait):
    x, probs = tensors(portrait.image, portrait.label)
    first, _ = person_alpha(x, probs)
    torch.manual_seed(123)
    np.random.seed(7)
    import cv2

    cv2.setRNGSeed(99)
    second, _ = person_alpha(x, probs)
    assert torch.equal(first, second)


def test_not_differentiable_and_inputs_untouched(portrait):
    x, probs = tensors(portrait.image, portrait.label)
    x.requires_grad_()
    before = probs.clone()
    alpha, _ = person_alpha(x, probs)
    assert not alpha.requires_grad, "a preprocessing step: gradients do not flow through it"
    assert torch.equal(probs, before)


def test_face_geometry_tilt_and_size():
    h = w = 200
    yy, xx = np.mgrid[:h, :w]
    for deg in (-20.0, 0.0, 25.0):
        t = math.radians(deg)
        u = (xx - 100) * math.cos(t) + (yy - 90) * math.sin(t)  # rotated frame (image y down)
        v = -(xx - 100) * math.sin(t) + (yy - 90) * math.cos(t)
        mask = (u / 30) ** 2 + (v / 40) ** 2 <= 1
        face = face_geometry(mask)
        assert math.degrees(face.tilt) == pytest.approx(deg, abs=2)
        assert face.size == pytest.approx(40, rel=0.08)
        # the chin lies on the face axis, 40 px below the centre
        assert face.chin[0] == pytest.approx(100 - 40 * math.sin(t), abs=2)
        assert face.chin[1] == pytest.approx(90 + 40 * math.cos(t), abs=2)
        assert not face.cut


def test_torso_prior_below_the_face_and_clipped():
    s = make_sample(2, seed=3, size=128)
    faces, _ = find_faces(s.label)
    neck, body, region = torso_prior(faces, s.label.shape)
    chin_y = int(faces[0].chin[1])
    assert body[chin_y + 10 :].sum() > 0 and body[: max(0, int(faces[0].box[1]))].sum() == 0
    ys = np.nonzero(neck)[0]
    assert len(ys) and ys.min() >= chin_y - 0.2 * faces[0].size, "the sure-person strip starts at the chin"
    assert (body <= region).all()
    assert body[-1].any(), "the body reaches the image bottom"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"work_size": 8}, "work_size"),
        ({"min_face": 1.5}, "min_face"),
        ({"iterations": 0}, "iterations"),
        ({"shoulder_width": 0}, "shoulder_width"),
        ({"margin": -1}, "margin"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    x, probs = torch.rand(1, 3, 32, 32), torch.full((1, NUM_CLASSES, 32, 32), 1 / NUM_CLASSES)
    with pytest.raises(ValueError, match=message):
        person_alpha(x, probs, **kwargs)


def test_bad_inputs_are_named():
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="person_alpha_from_model"):
        person_alpha(x, torch.rand(1, 2, 32, 32).softmax(1))
    with pytest.raises(ValueError, match="probs values"):
        person_alpha(x, torch.randn(1, NUM_CLASSES, 32, 32) * 5)
    with pytest.raises(ValueError, match="keep classes"):
        person_alpha(x, torch.rand(1, NUM_CLASSES, 32, 32).softmax(1), (11,))
    with pytest.raises(ValueError, match="batch"):
        person_alpha(x, torch.rand(2, NUM_CLASSES, 32, 32).softmax(1))
    with pytest.raises(ValueError, match="image values"):
        person_alpha(x * 255, torch.rand(1, NUM_CLASSES, 32, 32).softmax(1))
    with pytest.raises(TypeError, match="floating"):
        person_alpha((x * 255).byte(), torch.rand(1, NUM_CLASSES, 32, 32).softmax(1))
