"""Released architectures (manifests), strict loading errors, and our self-describing checkpoints."""
from __future__ import annotations

import json
import pickle

import pytest
import torch
from conftest import fixture_path

from var.checkpoint import CheckpointMismatchError, load_model_checkpoint, load_official_state_dict, save_checkpoint
from var.config import VAR_PRESETS, VQVAE_PRESETS, VARConfig
from var.io import ArtifactError
from var.transformer import VAR
from var.vqvae import VQVAE

MANIFESTS = {
    "manifest_vae_ch160v4096z32.json": ("vqvae", "vqvae-ch160v4096z32"),
    "manifest_var_d16.json": ("var", "var-d16"),
    "manifest_var_d20.json": ("var", "var-d20"),
    "manifest_var_d24.json": ("var", "var-d24"),
    "manifest_var_d30.json": ("var", "var-d30"),
    "manifest_var_d36s_512.json": ("var", "var-d36-s"),
}


@pytest.mark.parametrize("fname", sorted(MANIFESTS))
def test_preset_matches_release_manifest(fname):
    man = json.loads(fixture_path(fname).read_text())
    kind, preset = MANIFESTS[fname]
    with torch.device("meta"):
        model = VQVAE(VQVAE_PRESETS[preset]) if kind == "vqvae" else VAR(VAR_PRESETS[preset])
    sd = model.state_dict()
    expected = {e["key"]: (tuple(e["shape"]), e["dtype"]) for e in man["entries"]}
    got = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()}
    assert sorted(set(expected) - set(got)) == [] and sorted(set(got) - set(expected)) == []
    assert got == expected
    assert list(sd) == [e["key"] for e in man["entries"]], "state_dict order differs from the release"
    assert sum(p.numel() for p in model.parameters()) == man["num_parameters"]
    if kind == "var":
        d = man["derived"]
        cfg = VAR_PRESETS[preset]
        assert (cfg.embed_dim, cfg.num_heads, cfg.seq_len) == (d["embed_dim"], d["num_heads"], d["L"])
        assert cfg.drop_path_rate == pytest.approx(d["drop_path_rate"], rel=1e-12)
        assert tuple(cfg.patch_nums) == tuple(man["build_vae_var_kwargs"]["patch_nums"])


def tiny_var(**kw):
    base = dict(depth=2, num_classes=4, vocab_size=32, z_channels=8, patch_nums=(1, 2, 3), embed_dim_override=32,
                num_heads_override=2)
    base.update(kw)
    return VAR(VARConfig(**base))


def test_mismatched_state_dict_names_every_bad_key():
    model = tiny_var()
    sd = model.state_dict()
    sd.pop("head.bias")
    sd["blocks.0.attn.proj.weight"] = torch.zeros(3, 3)
    sd["not_a_key"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as e:
        load_official_state_dict(tiny_var(), sd)
    msg = str(e.value)
    assert "head.bias" in msg and "not_a_key" in msg and "blocks.0.attn.proj.weight" in msg and "(3, 3)" in msg


def test_self_describing_checkpoint_roundtrip(tmp_path):
    model = tiny_var(shared_aln=True)
    save_checkpoint(tmp_path / "m.pt", model, kind="var", step=7, extra={"metrics": {"loss": 1.5}})
    loaded, ckpt = load_model_checkpoint(tmp_path / "m.pt", kind="var")
    assert ckpt["step"] == 7 and ckpt["metrics"] == {"loss": 1.5}
    assert loaded.cfg == model.cfg
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with pytest.raises(CheckpointMismatchError, match="holds a 'var' model"):
        load_model_checkpoint(tmp_path / "m.pt", kind="vqvae")


def test_checkpoint_bytes_do_not_depend_on_wall_clock(tmp_path):
    """Two identical trainings differ only in their timings: their checkpoints must be byte-identical (the weights
    digest in scores.json depends on it), while the metrics that are not timings are kept."""
    torch.manual_seed(0)
    model = VAR(VARConfig(depth=1, embed_dim_override=16, num_classes=2, vocab_size=8, patch_nums=(1, 2)))
    for i, t in enumerate((1.25, 97.5)):
        metrics = {"val_loss": 2.5, "step": 4, "train_time_s": t, "seconds": t, "train_img_per_s": 8 / t,
                   "wall_seconds": t}
        save_checkpoint(tmp_path / f"{i}.pt", model, kind="var", step=4, extra={"metrics": metrics})
    assert (tmp_path / "0.pt").read_bytes() == (tmp_path / "1.pt").read_bytes()
    assert load_model_checkpoint(tmp_path / "0.pt", kind="var")[1]["metrics"] == {"val_loss": 2.5, "step": 4}


def test_checkpoint_whose_config_disagrees_with_weights_fails(tmp_path):
    model = tiny_var()
    save_checkpoint(tmp_path / "m.pt", model, kind="var")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt["config"]["depth"] = 3
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError, match="missing keys.*blocks.2"):
        load_model_checkpoint(tmp_path / "bad.pt")


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(ArtifactError, match="nope.pt"):
        load_model_checkpoint(tmp_path / "nope.pt")


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_malicious_pickle_is_refused_without_executing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"kind": "var", "config": {}, "model": _Evil()}, f)
    with pytest.raises(ArtifactError, match="evil.pt"):
        load_model_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_ablation_switches_change_the_model():
    on = tiny_var()
    off = tiny_var(adaln=False)
    assert any("ada_lin" in k for k in on.state_dict())
    assert not any("ada_lin" in k or "ada_gss" in k for k in off.state_dict())
    shared = tiny_var(shared_aln=True)
    assert "shared_ada_lin.1.weight" in shared.state_dict() and "blocks.0.ada_lin.1.weight" not in shared.state_dict()
    nonorm = tiny_var(attn_l2_norm=False)
    assert not any("scale_mul_1H11" in k for k in nonorm.state_dict())
    assert nonorm.blocks[0].attn.scale == pytest.approx(1 / 16 ** 0.5)
    # AdaLN off: the class reaches the tokens only through the start token, so with the start token's
    # contribution fixed, logits of later tokens still depend on it (attention) - but no per-block modulation.
    x = torch.randn(2, on.L - 1, 8)
    off.eval()
    a, b = off(torch.tensor([0, 0]), x), off(torch.tensor([1, 1]), x)
    assert not torch.allclose(a, b)
