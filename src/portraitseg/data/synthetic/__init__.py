"""Deterministic procedural portraits in the HELEN* layout, with their compositing layers.

Each sample is a person (face, hair, neck, shoulders, clothes) over a detailed background, drawn
as a stack of antialiased layers. Besides the image and its Helen label map, the generator keeps
the ground truth a portrait renderer is measured against: the clean background and the whole
person as an RGBA foreground with a soft alpha (soft at the hair). ``image`` is exactly the
composite of the stored layers::

    image = round(fg * alpha / 255 + background * (1 - alpha / 255))

Labels follow Helen: neck, shoulders and clothes belong to the foreground layer but are labelled
background (0); every other pixel gets the class whose visible coverage is largest (the argmax of
the per-class layer weights after compositing), so a hair pixel is one where hair covers more than
half of it, an eye pixel one where the eye covers more than half of the skin, and so on.

On disk (see :func:`generate`)::

    <root>/train.txt, test.txt                   "<image> <label>" per line, relative to <root>
    <root>/{train,test}/images/synth_<i>.png      RGB image (PNG: lossless, byte-reproducible)
    <root>/{train,test}/labels/synth_<i>.png      8-bit class ids 0..10
    <root>/layers/background/synth_<i>.png        RGB background without the person
    <root>/layers/foreground/synth_<i>.png        RGBA person, straight (not premultiplied) alpha
    <root>/manifest.json                          parameters + sha256 of every file above

Sample ``i`` depends only on ``(seed, i, size)``: the same seed gives byte-identical files (on the
same numpy / OpenCV / zlib builds), and growing ``n`` keeps the images already generated.

Modules: :mod:`.shapes` (antialiased shapes), :mod:`.scene` (the canvas and the background),
:mod:`.person` (the person's layers), :mod:`.draw` (one portrait: :func:`make_sample`),
:mod:`.files` (the dataset on disk: :func:`generate`, :func:`ensure_synthetic`, the manifest) and
:mod:`.cli` (``python -m portraitseg.data synth``); every name is importable from here.
"""

from portraitseg.data.synthetic.cli import add_synth_parser, run_synth
from portraitseg.data.synthetic.draw import GENERATOR_VERSION, SyntheticSample, make_sample
from portraitseg.data.synthetic.files import (
    DEFAULT_ROOT,
    MANIFEST_NAME,
    ensure_synthetic,
    generate,
    read_layers,
    read_manifest,
    verify,
)

__all__ = [
    "DEFAULT_ROOT", "GENERATOR_VERSION", "MANIFEST_NAME", "SyntheticSample", "add_synth_parser",
    "ensure_synthetic", "generate", "make_sample", "read_layers", "read_manifest", "run_synth", "verify",
]
