"""The offline evaluation network: trains to high accuracy on shapes, checkpoints round-trip strictly."""
from __future__ import annotations

import pytest
import torch

from eval.evalnet import EvalNet, EvalNetConfig, load_evalnet, save_evalnet, to_model_input, train_evalnet
from var.config import ConfigError, build_config, config_to_dict
from var.data import make_shapes
from var.io import ArtifactError, atomic_torch_save, load_torch


@pytest.fixture(scope="module")
def trained():
    """4 classes, 400/class: ~96% val accuracy in ~9 s on one thread (measured for seeds 0-2)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    tr = make_shapes(4, 400, 32, seed=0, split="train")
    va = make_shapes(4, 50, 32, seed=0, split="val")
    cfg = EvalNetConfig(width=8, feature_dim=32, epochs=12, batch_size=64)
    model, metrics = train_evalnet(cfg, *tr, *va)
    torch.set_num_threads(n)
    return cfg, model, metrics, va


def test_trains_to_high_accuracy(trained):
    _, model, metrics, _ = trained
    assert metrics["val_accuracy"] >= 0.9, metrics
    assert metrics["epochs"] == 12 and 0 <= metrics["train_accuracy"] <= 1 and not model.training


def test_deterministic_training(one_thread):
    tr = make_shapes(3, 20, 16, seed=0, split="train")
    cfg = EvalNetConfig(width=4, feature_dim=8, epochs=1, batch_size=16)
    (m1, r1), (m2, r2) = (train_evalnet(cfg, *tr, *tr) for _ in range(2))
    assert r1["final_loss"] == r2["final_loss"]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_features_shapes_any_size(one_thread):
    cfg = EvalNetConfig(width=4, feature_dim=24)
    for size in (16, 32, 64):
        net = EvalNet(cfg, 7, size).eval()
        feat, logits = net.features(torch.rand(2, 3, size, size) * 2 - 1)
        assert feat.shape == (2, 24) and logits.shape == (2, 7) and feat.dtype == torch.float32
        assert (feat >= 0).all()                                   # post-ReLU pooled features
        assert net(torch.zeros(1, 3, size, size)).shape == (1, 7)
    with pytest.raises(ValueError, match="16 px"):
        EvalNet(cfg, 7, 8)


def test_save_load_roundtrip(trained, tmp_path):
    cfg, model, metrics, (va, _) = trained
    save_evalnet(tmp_path / "m.pt", model, cfg, 4, 32, metrics)
    loaded = load_evalnet(tmp_path / "m.pt")
    assert not loaded.training and loaded.cfg == cfg
    x = to_model_input(va[:16])
    with torch.no_grad():
        f0, l0 = model.features(x)
        f1, l1 = loaded.features(x)
    assert torch.equal(f0, f1) and torch.equal(l0, l1)
    assert load_torch(tmp_path / "m.pt")["metrics"]["val_accuracy"] == metrics["val_accuracy"]
    # map_location places the module, not only the loaded tensors (scoring on CUDA failed on a CPU module)
    meta = load_evalnet(tmp_path / "m.pt", map_location="meta")
    assert {q.device.type for q in [*meta.parameters(), *meta.buffers()]} == {"meta"}


def test_load_mismatch_names_key(trained, tmp_path):
    cfg, model, metrics, _ = trained
    save_evalnet(tmp_path / "m.pt", model, cfg, 4, 32, metrics)
    ckpt = load_torch(tmp_path / "m.pt")
    ckpt["model"]["head.weight"] = torch.zeros(5, cfg.feature_dim)
    del ckpt["model"]["head.bias"]
    atomic_torch_save(tmp_path / "bad.pt", ckpt)
    with pytest.raises(ArtifactError, match=r"head\.weight.*\(5, 32\).*\(4, 32\)") as e:
        load_evalnet(tmp_path / "bad.pt")
    assert "head.bias" in str(e.value)


def test_load_missing_file_named(tmp_path):
    with pytest.raises(ArtifactError, match="nothere.pt"):
        load_evalnet(tmp_path / "nothere.pt")


def test_config_strict():
    with pytest.raises(ConfigError, match="evalnet.widht"):
        build_config(EvalNetConfig, {"widht": 8}, "evalnet")
    with pytest.raises(ConfigError, match="epochs"):
        build_config(EvalNetConfig, {"epochs": 0}, "evalnet")
    cfg = EvalNetConfig()
    assert build_config(EvalNetConfig, config_to_dict(cfg), "evalnet") == cfg
