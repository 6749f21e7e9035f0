"""Rejection sampling (var/rejection.py through var/sharded_sampling.generate), its classifiers (eval/classifiers.py)
and how a "-re" row is configured, planned and labelled (pipeline/rows.py, pipeline/plan.py, eval/row_tables.py)."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from var.config import RejectionConfig
from var.rejection import RejectionStats, candidate_seed, reject_block
from var.sharded_sampling import gather_to_file, generate

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ the loop
def fake_draw(labels_n, seed):
    """uint8 (n, 2, 2, 3): pixel [0, 0] holds the label, [0, 1] the seed's low byte, [1, 0] the position."""
    out = np.zeros((len(labels_n), 2, 2, 3), np.uint8)
    out[:, 0, 0] = np.asarray(labels_n)[:, None]
    out[:, 0, 1] = seed % 251
    out[:, 1, 0] = np.arange(len(labels_n))[:, None]
    return out


def test_a_classifier_of_one_class_keeps_only_that_class_with_the_hand_computed_rate():
    calls = []

    def only_class_1(images, labels):
        calls.append(len(labels))
        return (images[:, 0, 0, 0] == 1).astype(float)          # p(target) = 1 for class 1, else 0
    labels = np.array([0, 1, 1, 2])
    imgs, keep, st = reject_block(fake_draw, only_class_1, labels, seed=500, threshold=0.5, max_candidates=3)
    # round 0: 4 candidates, the two class-1 images accepted; rounds 1 and 2: the other two, never accepted
    assert calls == [4, 2, 2]
    assert keep.tolist() == [False, True, True, False] and len(imgs) == 2
    assert (imgs[:, 0, 0, 0] == 1).all() and (imgs[:, 0, 1, 0] == 500 % 251).all()   # round 0: the block seed
    assert (st.requested, st.drawn, st.accepted, st.dropped) == (4, 8, 2, 2)
    assert st.acceptance_rate == 2 / 8 and st.candidates_per_image == 4.0


def test_redrawn_images_come_from_the_round_seeds_and_are_accepted_when_confident():
    seen = []

    def second_try(images, labels):        # accepts a candidate from any round after the first
        seen.append(images[:, 0, 1, 0].tolist())
        return (images[:, 0, 1, 0] != 77 % 251).astype(float)
    imgs, keep, st = reject_block(fake_draw, second_try, np.array([3, 4, 5]), seed=77, threshold=1.0,
                                  max_candidates=4)
    assert keep.all() and (st.drawn, st.accepted) == (6, 3) and st.acceptance_rate == 0.5
    assert (imgs[:, 0, 1, 0] == candidate_seed(77, 1) % 251).all()
    assert (imgs[:, 0, 0, 0] == [3, 4, 5]).all() and seen[0] == [77 % 251] * 3


def test_candidate_seeds():
    assert candidate_seed(123, 0) == 123
    seeds = {candidate_seed(s, r) for s in range(50) for r in range(1, 5)}
    assert len(seeds) == 200 and min(seeds) > 10 ** 6 and max(seeds) < 2 ** 64
    assert RejectionStats(4, 8, 2) + RejectionStats(1, 1, 1) == RejectionStats(5, 9, 3)


# ------------------------------------------------------------------------------------------------ with a model
def models():
    from var.config import VARConfig, VQVAEConfig
    from var.transformer import VAR
    from var.vqvae import VQVAE
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(vocab_size=32, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                           patch_nums=(1, 2, 4))).eval()
    var = VAR(VARConfig(depth=2, num_classes=5, vocab_size=32, z_channels=8, patch_nums=(1, 2, 4),
                        embed_dim_override=32, num_heads_override=2)).eval()
    return var, vq


def only_class_1(images, labels):
    return (np.asarray(labels) == 1).astype(float)


def by_content(images, labels):
    """A deterministic stand-in classifier: 'confidence' from the image bytes (about half the candidates pass)."""
    return (images.astype(np.int64).sum((1, 2, 3)) % 7) / 6.0


KW = dict(cfg=1.5, cfg_schedule="linear", top_k=8, top_p=0.0, more_smooth=False)


def test_rejection_rows_keep_only_accepted_images_of_the_plain_blocks():
    var, vq = models()
    labels = np.repeat(np.arange(5), 2)
    plain = generate(var, vq, labels, block_size=4, seed=2, **KW)
    rc = RejectionConfig(threshold=0.5, max_candidates=3)
    g = generate(var, vq, labels, block_size=4, seed=2, rejection=rc, classify=only_class_1, **KW)
    st = g.rejection
    # 2 class-1 images accepted at once; the 8 others drawn 3 times each and dropped
    assert (st.requested, st.drawn, st.accepted, st.dropped) == (10, 2 + 8 * 3, 2, 8)
    assert st.acceptance_rate == 2 / 26 and st.candidates_per_image == 13.0
    assert [k.tolist() for k in g.keep.values()] == [[False, False, True, True], [False] * 4, [False] * 2]
    assert np.array_equal(g.images[0], plain.images[0][2:4])      # first candidates are the plain images
    accept_all = generate(var, vq, labels, block_size=4, seed=2, rejection=rc, classify=lambda x, y: np.ones(len(y)),
                          **KW)
    assert all(np.array_equal(accept_all.images[b], plain.images[b]) for b in plain.images)
    assert accept_all.rejection.acceptance_rate == 1.0 and accept_all.rejection.candidates_per_image == 1.0
    with pytest.raises(ValueError, match="classifier"):
        generate(var, vq, labels, block_size=4, seed=2, rejection=rc, **KW)


def _sample_re(rank: int, world: int, tmp: str, tag: str) -> None:
    from var.distributed import all_reduce_sum, current_world
    if world > 1:
        os.environ["LOCAL_RANK"] = str(rank)
        dist.init_process_group("gloo", init_method=f"file://{tmp}/pg-{tag}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    var, vq = models()
    labels = np.repeat(np.arange(5), 3)                     # 15 images, blocks of 4: the last has 3
    w = current_world()
    g = generate(var, vq, labels, block_size=4, seed=6, world=w, rejection=RejectionConfig(threshold=0.8,
                 max_candidates=2), classify=by_content, **KW)
    st = all_reduce_sum([g.rejection.requested, g.rejection.drawn, g.rejection.accepted], torch.device("cpu"))
    gather_to_file(g.images, labels, Path(tmp) / f"{tag}.npz", 4, w, keep=g.keep)
    if w.is_main:
        np.save(Path(tmp) / f"{tag}.stats.npy", st)
    if world > 1:
        dist.destroy_process_group()


def test_rejection_is_the_same_whatever_the_world_size(tmp_path):
    n = torch.get_num_threads()
    try:
        _sample_re(0, 1, str(tmp_path), "w1")
    finally:
        torch.set_num_threads(n)
    mp.spawn(_sample_re, args=(2, str(tmp_path), "w2"), nprocs=2, join=True)
    assert (tmp_path / "w1.npz").read_bytes() == (tmp_path / "w2.npz").read_bytes()
    s1, s2 = (np.load(tmp_path / f"{t}.stats.npy", allow_pickle=False) for t in ("w1", "w2"))
    assert s1.tolist() == s2.tolist() and s1[0] == 15 and 0 < s1[2] < 15 and s1[1] > 15   # some redrawn, some kept
    with np.load(tmp_path / "w1.npz", allow_pickle=False) as z:
        assert len(z["images"]) == len(z["labels"]) == s1[2]
        assert (by_content(z["images"], z["labels"]) >= 0.8).all()     # every kept image was accepted
    assert not list(tmp_path.glob(".w2.npz.shard*"))


# ------------------------------------------------------------------------------------------------ classifiers
def test_torchvision_classifier_state_dict_loads_and_gives_the_label_probability(tmp_path):
    import torchvision
    import torchvision.transforms.v2.functional as TF

    from eval.classifiers import torchvision_classifier
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None, num_classes=4)
    for m in net.modules():            # BatchNorm statistics of one batch: logits of a sane size (no saturation)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        net(torch.randn(4, 3, 224, 224))
    net.eval()
    path = tmp_path / "resnet50_standin.pth"
    torch.save(net.state_dict(), path)
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 48, 3), dtype=np.uint8)
    labels = np.array([0, 3, 1])
    got = torchvision_classifier(path, "resnet50", "cpu", "rows.r.sampler.rejection")(images, labels)
    # independently: torchvision's own transforms (resize shorter side 256, centre crop 224, ImageNet mean/std)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    x = TF.resize(x, [256], antialias=True)
    x = TF.center_crop(TF.to_dtype(x, torch.float32, scale=True), [224, 224])
    x = TF.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        want = net(x).softmax(-1)[torch.arange(3), torch.from_numpy(labels)].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)
    assert got.shape == (3,) and ((0 < got) & (got < 1)).all()
    with pytest.raises(FileNotFoundError, match=r"rows\.r\.sampler\.rejection\.classifier_weights"):
        torchvision_classifier(tmp_path / "missing.pth", "resnet50", "cpu", "rows.r.sampler.rejection")
    sd = net.state_dict()
    sd.pop("layer1.0.conv1.weight")
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(Exception, match="layer1.0.conv1.weight"):
        torchvision_classifier(tmp_path / "broken.pth", "resnet50", "cpu", "rows.r.sampler.rejection")


def test_evalnet_classifier_is_the_softmax_of_the_evaluation_network(tmp_path):
    from eval.classifiers import evalnet_classifier
    from eval.evalnet import EvalNet, EvalNetConfig, save_evalnet, to_model_input
    torch.manual_seed(0)
    net = EvalNet(EvalNetConfig(width=4, feature_dim=8), 3, 16).eval()
    save_evalnet(tmp_path / "evalnet.pt", net, net.cfg, 3, 16, {})
    images = np.random.default_rng(1).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 2, 0])
    got = evalnet_classifier(tmp_path / "evalnet.pt", "cpu", batch_size=2)(images, labels)
    with torch.no_grad():
        want = net(to_model_input(images)).softmax(-1)[torch.arange(5), torch.from_numpy(labels)].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ rows
def raw_params():
    from pipeline.params import read_yaml
    return read_yaml(ROOT / "params.yaml")


def test_variant_rows_reuse_a_model_and_are_not_in_table3():
    from pipeline.params import build_params
    p = build_params(raw_params())
    rows = {r: p.rows[r] for r in ("var-cfg-const", "var-no-cfg", "var-no-topk", "var-re")}
    assert all(r.model_from == "var-attnnorm" for r in rows.values())
    assert not set(rows) & set(p.table3.rows)
    s = {k: r.sampler for k, r in rows.items()}
    assert s["var-cfg-const"].cfg_schedule == "constant" and s["var-no-cfg"].cfg == 0
    assert s["var-no-topk"].top_k == s["var-no-topk"].top_p == 0 and s["var-re"].rejection.enabled
    assert p.rows["var-attnnorm"].sampler.cfg_schedule == "linear"     # the default stays the reference's


def test_rejection_row_is_planned_with_its_classifier_and_labelled():
    from eval.row_tables import build_table3, table3_markdown
    from pipeline.params import build_params, params_to_dict
    from pipeline.plan import build_plan
    raw = raw_params()
    raw["table3"] = {"rows": ["var-attnnorm", "var-re", "var-cfg-const"]}
    p = build_params(raw)
    plan = build_plan(p)
    job = plan.by_name("sample_row_var-re")
    assert job.inputs["classifier"] == "runs/default/evalnet/model.pt"
    assert job.inputs["model"] == "runs/default/rows/var-attnnorm/model.pt"
    assert "classifier" not in plan.by_name("sample_row_var-cfg-const").inputs
    raw["rows"]["var-re"]["sampler"]["rejection"]["classifier_weights"] = "weights/resnet50.pth"
    job = build_plan(build_params(raw)).by_name("sample_row_var-re")
    assert "classifier" not in job.inputs and "weights/resnet50.pth" in job.input_paths()

    recipes = params_to_dict(p)["rows"]
    scores = {"fid_evalnet": 10.0, "is_evalnet": 2.0}
    rej = {**RejectionStats(40, 100, 37).to_dict(), "threshold": 0.5}
    rows = [("var-attnnorm", recipes["var-attnnorm"], scores, {}, {"seconds_per_image": 1.0, "steps": 6}),
            ("var-re", recipes["var-re"], scores, {}, {"seconds_per_image": 2.7, "steps": 6, "rejection": rej}),
            ("var-cfg-const", recipes["var-cfg-const"], scores, {}, {"seconds_per_image": 1.0, "steps": 6})]
    df = build_table3(rows).set_index("row")
    meas = df[df.source == "measured"]
    assert meas.loc["var-re", "description"] == "rejection sampling (-re)"
    assert meas.loc["var-re", "sampling"] == ("CFG 4 linear ramp, top-k 19, top-p off; rejection, threshold 0.5, "
                                              "acceptance 0.370 (2.70 candidates per image, 3 of 40 dropped)")
    assert meas.loc["var-attnnorm", "sampling"] == "CFG 4 linear ramp, top-k 19, top-p off"
    assert meas.loc["var-cfg-const", "CFG"] == "4.0 constant" and "rejection" not in meas.loc["var-cfg-const",
                                                                                           "sampling"]
    assert "rejection, threshold 0.5, acceptance 0.370" in table3_markdown(build_table3(rows))


def test_sampler_settings_are_checked_and_named():
    from pipeline.params import build_params
    from var.config import ConfigError
    cases = [(lambda r: r["rows"]["var-re"]["sampler"]["rejection"].update(threshold=1.5),
              r"rows\.var-re\.sampler\.rejection\.threshold = 1\.5: must be in \[0, 1\]"),
             (lambda r: r["rows"]["var-cfg"]["sampler"].update(top_k=500), r"rows\.var-cfg\.sampler\.top_k = 500"),
             (lambda r: r["rows"]["var-cfg"]["sampler"].update(cfg_schedule="cosine"), r"cfg_schedule"),
             (lambda r: r["rows"]["ar-gpt2"]["sampler"].update(more_smooth=True), r"more_smooth"),
             (lambda r: r["sample"]["sampler"].update(rejection={"threshold": 0.5}), r"sample\.sampler\.rejection"),
             (lambda r: r["rows"]["var-cfg"].update(top_k=19), r"'rows\.var-cfg\.sampler\.top_k'"),
             (lambda r: r["sample"].update(cfg=2.0), r"belongs under 'sample\.sampler'")]
    for change, match in cases:
        raw = copy.deepcopy(raw_params())
        change(raw)
        with pytest.raises(ConfigError, match=match):
            build_params(raw)


def test_each_section_keeps_its_own_sampler_defaults_key_by_key():
    from pipeline.rows import RowConfig
    from var.config import SampleConfig, ZeroShotConfig, build_config
    s = build_config(SampleConfig, {"sampler": {"cfg": 2.0}}, "sample").sampler
    assert (s.cfg, s.top_k, s.top_p, s.cfg_schedule) == (2.0, 900, 0.96, "linear")     # the reference's ImageNet
    r = build_config(RowConfig, {"sampler": {"cfg": 2.0}}, "rows.x").sampler
    assert (r.cfg, r.top_k, r.top_p) == (2.0, 0, 0.0)                                  # rows: filters off
    z = build_config(ZeroShotConfig, {"sampler": {"top_k": 5}}, "zeroshot").sampler
    assert (z.cfg, z.top_k) == (1.5, 5)
    assert build_config(SampleConfig, {}, "sample") == SampleConfig()
