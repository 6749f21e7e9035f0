"""Property tests (hypothesis): the multi-scale quantiser's shapes over random scale lists, and params validation
(an unknown key at any nesting depth is a ConfigError naming exactly that key; valid values round-trip)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from eval.evalnet import EvalNetConfig
from pipeline.params import (
    SECTIONS,
    ConfigError,
    SampleConfig,
    ScoreConfig,
    Table1Config,
    build_params,
    load_raw,
    params_to_dict,
)
from var.config import RejectionConfig, VARConfig, VQVAEConfig, build_config, config_to_dict
from var.data import DataConfig
from var.tokenizer_train import TokenizerTrainConfig
from var.train import TrainConfig
from var.vqvae import VQVAE

ROOT = Path(__file__).resolve().parents[1]
# small budgets (the file runs in seconds); no shrinking phase: a failure prints its (unshrunk) example
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                phases=[Phase.explicit, Phase.reuse, Phase.generate])


# ------------------------------------------------------------------------------------------------ quantiser
@st.composite
def scale_lists(draw):
    """Strictly increasing patch_nums with 2..5 scales, last side <= 8 (K = 1 has no teacher-forcing input)."""
    sides = draw(st.lists(st.integers(1, 8), min_size=2, max_size=5, unique=True))
    return tuple(sorted(sides))


@FAST
@given(pns=scale_lists(), B=st.integers(1, 3), share=st.sampled_from([0, 1, 2, 4]),
       down=st.sampled_from([(1,), (1, 1)]), seed=st.integers(0, 2 ** 16))
def test_quantizer_shapes_across_scale_lists(pns, B, share, down, seed):
    torch.manual_seed(seed)
    V, C = 16, 4
    cfg = VQVAEConfig(vocab_size=V, z_channels=C, ch=32, ch_mult=down, num_res_blocks=1, using_sa=False,
                      using_mid_sa=False, patch_nums=pns, share_quant_resi=share)
    vq = VQVAE(cfg).eval()
    H = pns[-1] * cfg.downsample
    img_B3HW = torch.rand(B, 3, H, H) * 2 - 1
    L = sum(pn * pn for pn in pns)

    f_BChw = vq.encode_features(img_B3HW)
    assert f_BChw.shape == (B, C, pns[-1], pns[-1])
    idx_Bl, fhat_per_scale = vq.quantize.f_to_idx(f_BChw, return_fhat=True)
    assert [tuple(t.shape) for t in idx_Bl] == [(B, pn * pn) for pn in pns]
    assert all(t.dtype == torch.int64 and 0 <= t.min() and t.max() < V for t in idx_Bl)
    assert all(torch.equal(a, b) for a, b in zip(idx_Bl, vq.img_to_idx(img_B3HW)))

    with torch.no_grad():
        # decoding the tokens rebuilds exactly the f_hat accumulated while encoding, scale by scale
        cumulative = vq.quantize.idx_to_fhat(idx_Bl, cumulative=True)
        assert len(cumulative) == len(pns)
        for got, want in zip(cumulative, fhat_per_scale):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        f_hat = vq.quantize.idx_to_fhat(idx_Bl)
        assert f_hat.shape == (B, C, pns[-1], pns[-1])
        torch.testing.assert_close(f_hat, fhat_per_scale[-1], rtol=1e-6, atol=1e-6)

        # teacher forcing: scale k's input is f_hat after scales 1..k-1, area-resized to pn_k
        x_BLC = vq.idx_to_var_input(idx_Bl)
        assert x_BLC.shape == (B, L - pns[0] ** 2, C)
        start = 0
        for k in range(1, len(pns)):
            pn = pns[k]
            want = F.interpolate(cumulative[k - 1], size=(pn, pn), mode="area").reshape(B, C, -1).transpose(1, 2)
            torch.testing.assert_close(x_BLC[:, start:start + pn * pn], want, rtol=1e-5, atol=1e-6)
            start += pn * pn

        img = vq.idx_to_img(idx_Bl)
        assert img.shape == (B, 3, H, H) and img.min() >= -1 and img.max() <= 1
        assert [tuple(t.shape) for t in vq.split_idx(torch.cat(idx_Bl, 1))] == [(B, pn * pn) for pn in pns]


# ------------------------------------------------------------------------------------------------- params
def base_raw() -> dict:
    return load_raw(ROOT / "params.yaml", [ROOT / "configs/ci.yaml"])


def node_keys(raw: dict) -> dict[tuple[str, ...], set[str]]:
    """Every mapping of params whose keys are validated -> its valid keys (`models` itself maps free names)."""
    out = {(): set(SECTIONS), ("tokenizer",): {"model", "train"}}
    for path, cls in {("data",): DataConfig, ("sample",): SampleConfig, ("evalnet",): EvalNetConfig,
                      ("score",): ScoreConfig, ("table1",): Table1Config, ("tokenizer", "model"): VQVAEConfig,
                      ("tokenizer", "train"): TokenizerTrainConfig}.items():
        out[path] = {f.name for f in dataclasses.fields(cls)}
    for name in raw["models"]:
        out[("models", name)] = {"model", "train"}
        out[("models", name, "model")] = {f.name for f in dataclasses.fields(VARConfig)}
        out[("models", name, "train")] = {f.name for f in dataclasses.fields(TrainConfig)}
    return out


RAW = base_raw()
NODES = sorted(node_keys(RAW).items())
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda v: st.lists(v, max_size=3) | st.dictionaries(st.text(max_size=4), v, max_size=3),
                           max_leaves=5)


@FAST
@given(node=st.sampled_from(NODES), key=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,11}", fullmatch=True),
       value=json_values)
def test_unknown_key_at_any_depth_is_named_exactly(node, key, value):
    path, valid = node
    if key in valid:
        return
    raw = base_raw()
    cur = raw
    for part in path:
        cur = cur.setdefault(part, {})
    cur[key] = value
    with pytest.raises(ConfigError) as e:
        build_params(raw)
    msg = str(e.value)
    dotted = ".".join((*path, key))
    named = re.search(r"unknown (?:top-level )?key\(s\) (.*?); valid keys", msg)
    assert named, msg
    assert named.group(1) == repr(dotted), msg                 # exactly this key, nothing else
    assert all(k in msg for k in sorted(valid)[:3]), msg        # and the valid keys are listed


@FAST
@given(sample=st.fixed_dictionaries({
           "per_class": st.integers(1, 10 ** 6), "batch_size": st.integers(1, 4096),
           "sampler": st.fixed_dictionaries({
               "cfg": st.floats(0, 20, allow_nan=False), "cfg_schedule": st.sampled_from(["linear", "constant"]),
               "top_k": st.integers(0, 64),                                                 # the ci tokenizer: V = 64
               "top_p": st.floats(0, 1, exclude_max=True), "more_smooth": st.booleans()}),
           "seed": st.integers(0, 2 ** 31),
           "fast": st.just(True), "precision": st.sampled_from(["fp32", "bf16"]), "compile": st.booleans()}),
       train=st.fixed_dictionaries({
           "batch_size": st.integers(1, 2048), "max_steps": st.integers(0, 10 ** 6),
           "base_lr_per_256": st.floats(1e-7, 1.0), "ckpt_every_steps": st.integers(1, 10 ** 5),
           "label_smoothing": st.floats(0, 0.5), "nan_policy": st.sampled_from(["raise", "skip"])}),
       seed=st.integers(0, 2 ** 31), depth=st.integers(1, 4))
def test_valid_values_round_trip(sample, train, seed, depth):
    raw = base_raw()
    raw["seed"] = seed
    raw["sample"] = sample
    name = next(iter(raw["models"]))
    raw["models"][name]["train"].update(train)
    raw["models"][name]["model"]["depth"] = depth
    raw["models"][name]["model"]["embed_dim_override"] = 32 * depth     # heads (= depth) must divide the width
    p = build_params(raw)
    sample = {**sample, "sampler": {**sample["sampler"], "rejection": dataclasses.asdict(RejectionConfig())}}
    assert dataclasses.asdict(p.sample) == sample
    got = config_to_dict(p.models[name].train)
    assert {k: got[k] for k in train} == train
    assert p.models[name].model.depth == depth and p.data.seed == seed      # top-level seed is the default
    plain = params_to_dict(p)
    assert plain["sample"] == sample and plain["seed"] == seed
    for cfg in (p.data, p.sample, p.score, p.evalnet, p.tokenizer.model, p.tokenizer.train,
                p.models[name].model, p.models[name].train):
        assert build_config(type(cfg), config_to_dict(cfg), "x") == cfg   # plain dict -> config is lossless
