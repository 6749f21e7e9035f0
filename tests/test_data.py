"""Datasets: shapes determinism/balance/distinctness, image folders (modes, corrupt files), split files, config."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from var.config import ConfigError, build_config
from var.data import (
    SHAPE_FAMILIES,
    CorruptImageError,
    DataConfig,
    DatasetError,
    ImageSplit,
    class_names,
    index_imagefolder,
    load_split_arrays,
    make_shapes,
    materialise,
    write_index,
    write_split,
)


# -------------------------------------------------------------------------------------------------- shapes
def test_shapes_deterministic_bytes():
    a, la = make_shapes(10, 5, 32, seed=3, split="train")
    b, lb = make_shapes(10, 5, 32, seed=3, split="train")
    assert a.dtype == np.uint8 and a.shape == (50, 32, 32, 3) and la.dtype == np.int64
    assert a.tobytes() == b.tobytes() and np.array_equal(la, lb)


def test_shapes_image_depends_only_on_index():
    """(seed, split, index) fixes an image: a longer split starts with the same images."""
    short, _ = make_shapes(10, 2, 32, seed=0, split="val")
    long, _ = make_shapes(10, 4, 32, seed=0, split="val")
    assert short.tobytes() == long[:20].tobytes()


def test_shapes_seed_and_split_differ():
    base, _ = make_shapes(10, 3, 32, seed=0, split="train")
    other_seed, _ = make_shapes(10, 3, 32, seed=1, split="train")
    other_split, _ = make_shapes(10, 3, 32, seed=0, split="val")
    for other in (other_seed, other_split):
        # every image differs, not only some
        assert all(not np.array_equal(x, y) for x, y in zip(base, other))


def test_shapes_nuisance_options():
    """colour_levels snaps fg/bg to the palette, shape_scale bounds the size, noise_res changes only the texture
    fields (drawn last: every other draw of an image is the same)."""
    from var.data import _shape_params, _upsample_noise
    for i in range(40):
        b, n = _shape_params(0, "train", i, 10), _shape_params(0, "train", i, 10, noise_res=4)
        assert n["noise"].shape == (2, 4, 4) and all(np.array_equal(b[k], n[k]) for k in b if k != "noise")
        p = _shape_params(0, "train", i, 10, colour_levels=2, shape_scale=(0.6, 0.7))
        assert set(np.round(np.concatenate([p["fg"], p["bg0"]]), 6)) <= {0.1, 0.9}
        assert np.abs(p["fg"] - p["bg0"]).sum() >= 0.9            # the contrast rule still holds
        assert 0.6 <= p["scale"] <= 0.7
    # bilinear upsampling at pixel centres: a linear ramp stays linear inside, edges clamp to the end values
    ramp = np.arange(4, dtype=np.float32)[None, None, None, :].repeat(4, 2)          # (1, 1, 4, 4), x = 0..3
    up = _upsample_noise(ramp, 16, smooth=True)[0, 0, 0]
    assert up[0] == 0 and up[-1] == 3 and np.allclose(np.diff(up[2:14]), 0.25)
    assert np.array_equal(_upsample_noise(ramp, 16, smooth=False)[0, 0, 0], np.repeat(np.arange(4.0), 4))
    a, _ = make_shapes(4, 3, 32, seed=0, split="val", noise_res=4, smooth_noise=True, colour_levels=2)
    b, _ = make_shapes(4, 3, 32, seed=0, split="val", noise_res=4, smooth_noise=True, colour_levels=2)
    assert a.tobytes() == b.tobytes()
    for bad, key in (({"colour_levels": 1}, "colour_levels"), ({"noise_res": 1}, "noise_res"),
                     ({"shape_scale": [0.9, 0.5]}, "shape_scale")):
        with pytest.raises(ConfigError, match=key):
            build_config(DataConfig, bad, "data")


def test_shapes_balanced_and_all_families():
    imgs, labels = make_shapes(len(SHAPE_FAMILIES), 7, 32, seed=0, split="train")
    assert np.bincount(labels).tolist() == [7] * len(SHAPE_FAMILIES)
    with pytest.raises(ValueError, match="num_classes"):
        make_shapes(len(SHAPE_FAMILIES) + 1, 1, 32, seed=0, split="train")


def test_shapes_classes_distinct_and_varied():
    """Class structure is in the shape, not the colour: a nearest-class-mean classifier on per-image
    standardised gray edges beats chance by far, and images within a class vary a lot."""
    tr, ltr = make_shapes(10, 60, 32, seed=0, split="train")
    va, lva = make_shapes(10, 20, 32, seed=0, split="val")

    def feat(x):
        g = x.astype(np.float32).mean(-1)
        e = np.abs(np.diff(g, axis=1))[:, :, :-1] + np.abs(np.diff(g, axis=2))[:, :-1, :]  # edge magnitude
        e = e.reshape(len(x), -1)
        return (e - e.mean(1, keepdims=True)) / (e.std(1, keepdims=True) + 1e-6)

    ftr, fva = feat(tr), feat(va)
    means = np.stack([ftr[ltr == k].mean(0) for k in range(10)])
    pred = ((fva[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == lva).mean() > 0.3          # chance is 0.1
    d = ((means[:, None] - means[None]) ** 2).sum(-1)
    assert d[~np.eye(10, dtype=bool)].min() > 0  # no two classes have the same mean image
    for k in range(10):
        assert tr[ltr == k].astype(np.float32).std(0).mean() > 30  # pixel std across one class's images


def test_shapes_64px():
    imgs, _ = make_shapes(12, 2, 64, seed=0, split="train")
    assert imgs.shape == (24, 64, 64, 3) and imgs.std() > 20


# ---------------------------------------------------------------------------------------------- config
def test_dataconfig_unknown_key_named():
    with pytest.raises(ConfigError, match="data.imge_size"):
        build_config(DataConfig, {"kind": "shapes", "imge_size": 32}, "data")


@pytest.mark.parametrize("bad, msg", [
    ({"kind": "lsun"}, "data.kind"), ({"num_classes": 99}, "num_classes"), ({"image_size": 30}, "image_size"),
    ({"kind": "imagefolder"}, "data.root"), ({"root": "x"}, "data.root"),
    ({"kind": "imagefolder", "root": "x", "num_classes": -1}, "num_classes"),
])
def test_dataconfig_validation(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        build_config(DataConfig, bad, "data")


def test_materialise_shapes_and_split_roundtrip(tmp_path):
    cfg = build_config(DataConfig, {"train_per_class": 3, "val_per_class": 2, "num_classes": 4}, "data")
    out = materialise(cfg)
    assert out["train"][0].shape == (12, 32, 32, 3) and out["val"][0].shape == (8, 32, 32, 3)
    assert class_names(cfg) == ["circle", "square", "triangle", "ring"]
    write_split(tmp_path / "train.npz", *out["train"])
    images, paths, labels = load_split_arrays(tmp_path / "train.npz")
    assert paths is None and np.array_equal(images, out["train"][0]) and np.array_equal(labels, out["train"][1])
    ds = ImageSplit(tmp_path / "train.npz", 32)
    img, label = ds[5]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and label == 1
    assert -1.0 <= img.min() and img.max() <= 1.0
    with pytest.raises(DatasetError, match="expected 64"):
        ImageSplit(tmp_path / "train.npz", 64)


# ------------------------------------------------------------------------------------------ image folders
def _write_folder(root):
    """root/{a,b}: RGB, L, RGBA, palette and an upper-case .PNG, at odd sizes."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(root / "a" / "rgb.jpg", quality=95)
    Image.new("L", (30, 50), 128).save(root / "a" / "gray.png")
    Image.new("RGBA", (32, 32), (0, 0, 255, 0)).save(root / "b" / "alpha.png")   # fully transparent -> white
    Image.new("P", (20, 20), 3).save(root / "b" / "pal.bmp")
    Image.new("RGB", (64, 48), (0, 255, 0)).save(root / "b" / "UPPER.PNG")
    (root / "b" / "notes.txt").write_text("ignored: not an image extension")


def test_index_imagefolder_modes(tmp_path):
    _write_folder(tmp_path / "train")
    paths, labels, names = index_imagefolder(tmp_path / "train")
    assert names == ["a", "b"] and labels.tolist() == [0, 0, 1, 1, 1] and len(paths) == 5
    assert any(p.endswith("UPPER.PNG") for p in paths)
    write_index(tmp_path / "train.npz", paths, labels)
    images, paths2, labels2 = load_split_arrays(tmp_path / "train.npz")
    assert images is None and paths2 == paths and labels2.dtype == np.int64
    ds = ImageSplit(tmp_path / "train.npz", 16)
    got = {p.rsplit("/", 1)[1]: ds[i][0] for i, p in enumerate(paths)}
    assert all(x.shape == (3, 16, 16) and x.dtype == torch.float32 for x in got.values())
    assert torch.allclose(got["alpha.png"], torch.ones(3, 16, 16))               # composited on white
    assert torch.allclose(got["gray.png"][0], got["gray.png"][1])                # gray -> equal channels
    assert got["rgb.jpg"][0].mean() > 0.9 and got["rgb.jpg"][1].mean() < -0.9


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found.*nope"):
        index_imagefolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty.*empty"):
        index_imagefolder(tmp_path / "empty")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(DatasetError, match="no class sub-folders.*flat"):
        index_imagefolder(tmp_path / "flat")
    (tmp_path / "noimg" / "cls").mkdir(parents=True)
    (tmp_path / "noimg" / "cls" / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match="no images.*cls"):
        index_imagefolder(tmp_path / "noimg")


def _write_corrupt(split_dir):
    _write_folder(split_dir)
    good = split_dir / "a" / "big.jpg"
    Image.new("RGB", (64, 64), (9, 99, 199)).save(good, quality=95)
    data = good.read_bytes()
    (split_dir / "a" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (split_dir / "b" / "fake.jpg").write_bytes(b"this is not a jpeg at all")


def test_corrupt_images_named(tmp_path):
    _write_corrupt(tmp_path / "train")
    write_index(tmp_path / "s.npz", *index_imagefolder(tmp_path / "train")[:2])
    ds = ImageSplit(tmp_path / "s.npz", 16)
    for name in ("truncated.jpg", "fake.jpg"):
        i = next(i for i, p in enumerate(ds.paths) if p.endswith(name))
        with pytest.raises(CorruptImageError, match=name):
            ds[i]


def test_skip_corrupt_counts(tmp_path, caplog):
    _write_corrupt(tmp_path / "train")
    write_index(tmp_path / "s.npz", *index_imagefolder(tmp_path / "train")[:2])
    with caplog.at_level(logging.WARNING, logger="var.data"):
        ds = ImageSplit(tmp_path / "s.npz", 16, skip_corrupt=True)
    assert ds.num_skipped == 2 and len(ds) == 6 and "skipped 2" in caplog.text
    assert all(ds[i][0].shape == (3, 16, 16) for i in range(len(ds)))


def test_materialise_imagefolder(tmp_path):
    _write_folder(tmp_path / "train")
    _write_folder(tmp_path / "val")
    cfg = build_config(DataConfig, {"kind": "imagefolder", "root": str(tmp_path), "num_classes": 0}, "data")
    out = materialise(cfg)
    assert len(out["train"][0]) == 5 and class_names(cfg) == ["a", "b"]
    with pytest.raises(DatasetError, match="num_classes is 3"):
        materialise(build_config(DataConfig, {"kind": "imagefolder", "root": str(tmp_path), "num_classes": 3},
                                 "data"))
