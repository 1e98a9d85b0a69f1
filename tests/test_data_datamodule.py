"""HelenDataModule: splits, deterministic val carving, loaders, and the check command."""

from __future__ import annotations

import torch

from portraitseg.data import HelenDataModule, carve_split, discover
from portraitseg.data.__main__ import main as data_main
from portraitseg.data.check import check_dataset


def dm(root, **kw) -> HelenDataModule:
    return HelenDataModule(root, image_size=64, batch_size=4, num_workers=0, **kw)


def test_val_is_carved_deterministically(tiny_helenstar):
    train = discover(tiny_helenstar)["train"]
    a = carve_split(train, 0.3, seed=1)
    b = carve_split(train, 0.3, seed=1)
    c = carve_split(train, 0.3, seed=2)
    assert [s.id for s in a[1]] == [s.id for s in b[1]] and len(a[1]) == 3
    assert [s.id for s in a[1]] != [s.id for s in c[1]]
    assert not {s.id for s in a[0]} & {s.id for s in a[1]}


def test_splits_and_batches(tiny_helenstar):
    module = dm(tiny_helenstar, val_fraction=0.2)
    module.setup()
    assert {k: len(v) for k, v in module.splits.items()} == {"train": 8, "val": 2, "test": 4}
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["mask"].dtype == torch.int64
    test_batch = next(iter(module.test_dataloader()))
    assert test_batch["orig_mask"].shape == (4, 64, 64) and test_batch["valid_size"].shape == (4, 2)


def test_train_list_and_limit(tiny_helenstar):
    (tiny_helenstar / "few.txt").write_text(
        "train/images/image_0.png train/labels/label_0.png\n"
        "train/images/image_1.png train/labels/label_1.png\n"
        "train/images/image_2.png train/labels/label_2.png\n"
    )
    module = dm(tiny_helenstar, train_list="few.txt", val_fraction=0.34, limit=1)
    module.setup()
    assert len(module.splits["train"]) == 1 and len(module.splits["val"]) == 1


def test_check_reports_counts_histogram_and_problems(tiny_helenstar, capsys):
    report = check_dataset(tiny_helenstar)
    assert report.ok and report.counts == {"train": 10, "test": 4}
    assert report.class_pixels.sum() == 14 * 64 * 64 and report.class_pixels[10] > 0
    (tiny_helenstar / "train/images/image_4.png").write_bytes(b"garbage")
    assert data_main(["check", str(tiny_helenstar)]) == 1
    out = capsys.readouterr().out
    assert "image_4.png" in out and "not an image" in out and "train 10" in out


def test_check_real_helenstar(helenstar_root, capsys):
    (helenstar_root / "sample40.txt").read_text()  # the sample list exists
    report = check_dataset(helenstar_root)
    assert report.counts == {"train": 1999} and report.ok
    assert report.min_size == report.max_size == (256, 256)
    share = report.class_pixels / report.class_pixels.sum()
    assert 0.6 < share[0] < 0.75 and (share > 0).all()


def test_synthetic_data_is_prepared_once_per_process(tmp_path, monkeypatch):
    """Lightning calls prepare_data() and setup() calls it again: the synthetic check (and its
    "up to date" log line) runs once."""
    import portraitseg.data.synthetic as synthetic
    from portraitseg.data import HelenDataModule

    calls = []
    real = synthetic.ensure_synthetic
    monkeypatch.setattr(synthetic, "ensure_synthetic", lambda *a, **k: calls.append(1) or real(*a, **k))
    dm = HelenDataModule(tmp_path / "synth", layout="helenstar", image_size=32, num_workers=0,
                         synthetic={"n": 4, "seed": 0, "size": 32})
    dm.prepare_data()
    dm.setup()
    assert len(calls) == 1 and dm.splits["train"]
