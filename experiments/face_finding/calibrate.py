"""Fit the two constants that tie MTCNN's boxes to the face parser's framing, on HELEN* train photos
(the train part of the 10 % val carve: the benchmark judges on val photos only).

* ``BOX_CALIBRATION`` (:mod:`portraitseg.subject.faces`): MTCNN box -> face box (the extent of the
  label's skin + facial-feature pixels, classes 1-9): median centre offset and size ratios of the
  best-overlapping detection.
* ``FACE_FRAMING`` (:mod:`portraitseg.pipeline`): face box -> the square crop framed like a HELEN*
  photo (the photo's long side over the face box's long side, and the photo centre's offset from the
  face-box centre, in face-box long sides).

    python experiments/face_finding/calibrate.py --n 200
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

HERE = Path(__file__).resolve().parent
HELENSTAR = HERE.parents[1].parent / "shared" / "data" / "helenstar"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(HELENSTAR))
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--out", default=str(HERE / "calibration.json"))
    args = parser.parse_args()

    import torch

    from portraitseg.data.datamodule import carve_split
    from portraitseg.data.layouts import discover
    from portraitseg.io import read_image, read_label
    from portraitseg.subject.faces import MTCNN

    torch.set_num_threads(1)
    train, _ = carve_split(discover(args.root, "helenstar")["train"], 0.1, 0)
    detector = MTCNN(min_face=24)
    det_rows, frame_rows = [], []
    for sample in train[: args.n]:
        rgb, label = read_image(sample.image), read_label(sample.label)
        ys, xs = np.nonzero((label >= 1) & (label <= 9))
        if len(xs) == 0:
            continue
        face = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
        fw, fh = face[2] - face[0], face[3] - face[1]
        flong = max(fw, fh)
        h, w = label.shape
        frame_rows.append([max(h, w) / flong, (w / 2 - (face[0] + face[2]) / 2) / flong,
                           (h / 2 - (face[1] + face[3]) / 2) / flong])
        with torch.no_grad():
            det = detector(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0][:, :4].numpy()
        if len(det) == 0:
            continue
        lt = np.maximum(det[:, :2], face[:2])
        rb = np.minimum(det[:, 2:], face[2:])
        inter = np.clip(rb - lt, 0, None).prod(1)
        union = (det[:, 2:] - det[:, :2]).prod(1) + fw * fh - inter
        best = det[np.argmax(inter / union)]
        bw, bh = best[2] - best[0], best[3] - best[1]
        if (inter / union).max() < 0.3:
            continue
        det_rows.append([((face[0] + face[2]) - (best[0] + best[2])) / 2 / bw,
                         ((face[1] + face[3]) - (best[1] + best[3])) / 2 / bh, fw / bw, fh / bh])
    det_med = np.median(np.array(det_rows), 0)
    frame_med = np.median(np.array(frame_rows), 0)
    out = {"photos": args.n, "detected": len(det_rows),
           "box_calibration_dx_dy_sx_sy": [round(float(v), 3) for v in det_med],
           "face_framing_side_dx_dy": [round(float(v), 3) for v in frame_med]}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
