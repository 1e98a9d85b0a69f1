"""Binary person masks from the synthetic portraits, in the generic folder layout.

The synthetic generator's foreground layer holds the whole person (head, hair, neck, shoulders,
clothes); its alpha > 0.5 is the person mask. Writes ``<out>/{train,test}/images/<id>.png`` and
``<out>/{train,test}/masks/<id>.png`` (0 = background, 255 = person), readable by
``python train.py experiment=person data.root=<out>`` (``conf/experiment/person_synthetic.yaml``).

    python experiments/person/export_person_masks.py --out data/synthetic_person --n 256 --size 256
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from portraitseg.data.synthetic import make_sample


def export_person_masks(out: str | Path, n: int, size: int = 128, seed: int = 0,
                        test_fraction: float = 0.2) -> Path:
    """Write ``n`` synthetic portraits and their person masks under ``out``; returns ``out``."""
    out = Path(out)
    n_test = round(n * test_fraction) if n >= 2 else 0
    for i in range(n):
        split = "test" if i >= n - n_test else "train"
        sample = make_sample(i, seed=seed, size=size)
        sid = f"synth_{i:04d}"
        for kind, array in (("images", sample.image), ("masks", np.where(sample.alpha > 0.5, 255, 0))):
            path = out / split / kind / f"{sid}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array.astype(np.uint8)).save(path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/synthetic_person"))
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    export_person_masks(args.out, args.n, args.size, args.seed)
    print(f"wrote {args.n} images and person masks under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
