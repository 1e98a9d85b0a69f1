"""PortraitPipeline.with_options: another set of options around the same loaded networks."""

from __future__ import annotations

import torch

from portraitseg.classes import CLASS_NAMES
from portraitseg.pipeline import PortraitPipeline, render_preset

HAIR = CLASS_NAMES.index("hair")


def test_with_options_shares_the_networks_and_changes_the_options():
    base = PortraitPipeline.from_pretrained("default", "disc", "cpu")
    other = base.with_options(render_preset("gaussian", strength=0.02), keep=[HAIR], people="all")
    assert other.segmenter is base.segmenter and other.face_finder is base.face_finder
    assert other.keep == (HAIR,) and other.people == "all" and base.people == "main"
    assert other.renderer.options["blur"] == "gaussian" and base.renderer.options["blur"] == "disc"
    assert other.model_size == base.model_size and other.max_pixels == base.max_pixels
    same = base.with_options()
    photo = torch.rand(1, 3, 96, 128)
    a, b = base(photo.clone()), same(photo.clone())
    assert torch.equal(a.portrait, b.portrait) and torch.equal(a.alpha, b.alpha)
    assert not torch.equal(other(photo.clone()).portrait, a.portrait)


def test_with_options_keeps_the_new_renderers_classes_unless_given():
    base = PortraitPipeline.from_pretrained("default", "disc", "cpu", keep=[HAIR])
    assert base.with_options(render_preset("gaussian")).keep == tuple(render_preset("gaussian").keep)
    assert base.with_options(max_pixels=1000).keep == (HAIR,)
