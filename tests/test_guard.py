"""The evaluation guard: each classic mistake behind a wrong published FID is an error naming the file and what is
wrong, or (fewer samples, a knowing deviation) a label; the score stage runs it before computing any feature."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from eval import guard
from eval.features import INCEPTION, load_extractor
from eval.guard import EvaluationGuardError
from var.weights import WeightsHashError

ROOT = Path(__file__).resolve().parents[1]


def labels_of(per_class, classes=1000):
    return np.repeat(np.arange(classes), per_class)


def test_fid_50k_label_only_for_50_per_class():
    assert guard.fid_label(labels_of(50)) == "FID-50k"
    assert guard.fid_label(labels_of(50)[:-1]) == "FID-49999"        # 49,999 samples: a label, not FID-50k
    assert guard.fid_label(labels_of(10)) == "FID-10000"
    guard.check_class_balance(labels_of(50)[:-1], 1000, "s.npz")      # short by one: still balanced


def test_unbalanced_histogram_is_an_error_naming_the_file():
    labels = np.concatenate([labels_of(50), np.zeros(7, np.int64)])
    with pytest.raises(EvaluationGuardError, match=r"s\.npz: the class histogram is unbalanced \(class 1: 50"):
        guard.check_class_balance(labels, 1000, "s.npz")


def test_images_of_the_wrong_size_or_type():
    with pytest.raises(EvaluationGuardError, match=r"s\.npz: images must be \(N, 256, 256, 3\).*\(2, 255, 256, 3\)"):
        guard.check_images(np.zeros((2, 255, 256, 3), np.uint8), 256, "s.npz")
    with pytest.raises(EvaluationGuardError, match="must be uint8, got float32"):
        guard.check_images(np.zeros((2, 256, 256, 3), np.float32), 256, "s.npz")
    guard.check_images(np.zeros((2, 256, 256, 3), np.uint8), 256, "s.npz")


def test_reference_batch_without_mu_s_is_refused():
    arrays = {"arr_0": np.zeros((4, 8, 8, 3), np.uint8), "mu": np.zeros(2048), "sigma": np.zeros((2048, 2048)),
              "sigma_s": np.zeros((2023, 2023))}
    with pytest.raises(EvaluationGuardError, match=r"ref\.npz: not an ADM reference batch: no 'mu_s'"):
        guard.check_reference_batch(arrays, "ref.npz", inception=True)
    arrays["mu_s"] = np.zeros(2024)
    with pytest.raises(EvaluationGuardError, match=r"mu_s \(2024,\) \(expected \(2023,\)\)"):
        guard.check_reference_batch(arrays, "ref.npz", inception=True)
    arrays["mu_s"] = np.zeros(2023)
    guard.check_reference_batch(arrays, "ref.npz", inception=True)


def test_two_identical_blocks_are_the_same_seed_mistake():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 4, 4, 3), dtype=np.uint8)
    guard.check_distinct_blocks(images, 4, "s.npz")
    images[8:12] = images[0:4]
    with pytest.raises(EvaluationGuardError, match=r"s\.npz: blocks 0 and 2 \(of 4 images\) are identical"):
        guard.check_distinct_blocks(images, 4, "s.npz")


def test_a_wrong_inception_weights_file_is_refused(tmp_path):
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({"not": torch.zeros(1)}, path)          # not the file its name's hash prefix promises
    with pytest.raises(WeightsHashError, match="6726825d"):
        load_extractor(INCEPTION, weights_path=path)


def test_score_stage_runs_the_guard_before_any_feature(tmp_path, monkeypatch):
    import pipeline.stages.score as stage
    called = []
    monkeypatch.setattr(stage, "load_extractor", lambda *a, **k: called.append(a))
    (tmp_path / "over.yaml").write_text(yaml.safe_dump({"data": {"image_size": 32}}))
    labels = np.repeat(np.arange(10), 5)
    images = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    images[10:20] = images[0:10]                        # blocks 0 and 1 of 10 images drawn with one seed
    np.savez(tmp_path / "s.npz", images=images, labels=labels)
    (tmp_path / "m.json").write_text(json.dumps({"batch_size": 10}))
    args = argparse.Namespace(params=str(ROOT / "params.yaml"), configfile=[str(tmp_path / "over.yaml")],
                              device="cpu", setting="", scales="all", job="", name="m", samples=str(tmp_path / "s.npz"),
                              seed_samples="", sample_metrics=str(tmp_path / "m.json"), real="r.npz",
                              evalnet="e.pt", untrained=None, scores=str(tmp_path / "scores.json"))
    with pytest.raises(EvaluationGuardError, match="blocks 0 and 1"):
        stage.main(args, logging.getLogger("test"))
    assert not called and not (tmp_path / "scores.json").exists()


def test_a_rejection_row_is_exempt_from_the_balance_and_block_checks_only():
    """A rejection-sampled row keeps only accepted images (classes unbalanced by design, blocks shorter than the
    batch size): the score stage skips those two checks for it, and labels its FID by the kept count."""
    from pipeline.params import load_params
    from pipeline.stages.score import check
    root = Path(__file__).resolve().parents[1]
    p = load_params(root / "params.yaml", [root / "configs/ci.yaml"])
    H = p.data.image_size
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 2, 2, 3], dtype=np.int64)          # class 1 lost two images, class 3 one
    images = rng.integers(0, 256, (len(labels), H, H, 3), dtype=np.uint8)
    args = argparse.Namespace(name="var-re", real="runs/ci/data/val.npz")
    sets = [("samples.npz", images, labels)]
    assert check(args, p, sets, {"batch_size": 4, "rejection": {"threshold": 0.25}}) == "FID-7"
    with pytest.raises(EvaluationGuardError, match="unbalanced"):
        check(args, p, sets, {"batch_size": 4, "rejection": None})
    with pytest.raises(EvaluationGuardError):                          # the size check still applies
        check(args, p, [("samples.npz", images[:, :-1], labels)], {"batch_size": 4, "rejection": {"threshold": 0.25}})
