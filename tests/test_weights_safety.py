"""Every third-party weights path refuses files that would run code, and checks a pinned sha256.

For each path (torch-fidelity's Inception, clean-fid's TorchScript Inception, the LPIPS / VGG16 files, the released
VAR and VQVAE checkpoints) a file carrying a payload is given where the weights belong: a pickle whose `__reduce__`
calls `open(marker, "w")`, or a TorchScript archive whose `__setstate__` writes the marker with `torch.save`. Each
payload is first shown to be live (the unsafe loader creates its marker); then the project's loader must refuse the
file, pinned or not, and its marker must not exist. A wrong full sha256 is refused with both digests in the message;
the right one loads stand-in weights with the exact key set the loader checks.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path
from typing import Tuple

import pytest
import torch
import torch.nn as nn
import yaml

import eval.cleanfid_check as cc
from eval.features import load_extractor
from eval.inception import InceptionFeatures, write_random_inception_weights
from pipeline.params import ConfigError, build_params, load_params, load_raw
from var.checkpoint import CheckpointMismatchError, import_released, load_official_state_dict
from var.perceptual import build_perceptual
from var.tokenizer_train import TokenizerTrainConfig, init_tokenizer_weights
from var.transformer import VAR
from var.vqvae import VQVAE
from var.weights import (
    MissingWeightsError,
    RefusedWeightsError,
    WeightsHashError,
    check_sha256,
    load_weights,
    read_pinned_torchscript,
)

ROOT = Path(__file__).resolve().parents[1]


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class OpenMarker:
    """Unpickling this calls open(marker, 'w'), creating the marker file: the stand-in for any payload."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_pickle_payload(path: Path, marker: Path, tensors: dict | None = None) -> Path:
    """A file that looks like a state dict, with one entry that runs code when unpickled."""
    torch.save({**(tensors or {"weight": torch.ones(2)}), "payload": OpenMarker(marker)}, path)
    return path


class SetStateWriter(nn.Module):
    """A scripted module whose TorchScript `__setstate__` writes a file while `torch.jit.load` reads the archive."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.layers = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        return self.layers(x)

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        torch.save(torch.ones(1), state[0])
        self.marker = state[0]
        self.training = state[1]


class ForwardWriter(nn.Module):
    """No load-time hook; its forward writes a file (runs when clean-fid extracts features)."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.layers = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        torch.save(x, self.marker)
        return self.layers(x)


class Benign(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        return self.layers(x)


def write_torchscript(path: Path, module: nn.Module) -> Path:
    torch.jit.script(module).save(str(path))
    return path


def assert_live(tmp_path: Path) -> None:
    """The payload object is live: a full unpickler (what a loader without weights_only runs) creates its marker."""
    import pickle
    marker = tmp_path / "control-marker"
    pickle.loads(pickle.dumps({"weight": 1.0, "payload": OpenMarker(marker)}))
    assert marker.exists()


def assert_refused_and_inert(call, marker: Path, error=RefusedWeightsError, match: str | None = None) -> str:
    with pytest.raises(error, match=match) as e:
        call()
    assert not marker.exists(), "the payload ran"
    return str(e.value)


def assert_hash_refused(call, path: Path, wrong: str) -> None:
    with pytest.raises(WeightsHashError) as e:
        call()
    msg = str(e.value)
    assert str(path) in msg and sha256(path) in msg and wrong in msg, msg


WRONG = "ab" * 32


# ------------------------------------------------------------------------------------------ the helper itself
def test_helper_pins_full_digest_prefix_convention_and_names_missing_files(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"a": torch.arange(3.0)}, path)
    digest = sha256(path)
    obj, got = load_weights(path, digest, key="x.weights")
    assert got == digest and torch.equal(obj["a"], torch.arange(3.0))
    assert load_weights(path, digest.upper(), key="x.weights")[1] == digest    # hex case does not matter
    assert load_weights(path, digest[:8], key="x.weights")[1] == digest        # the file-name prefix convention
    assert load_weights(path, "", key="x.weights")[1] == digest                # unpinned: still returns the digest
    with pytest.raises(WeightsHashError, match=r"x\.weights_sha256"):
        load_weights(path, digest[:8][::-1], key="x.weights")
    assert_hash_refused(lambda: load_weights(path, WRONG, key="x.weights"), path, WRONG)
    with pytest.raises(MissingWeightsError) as e:
        load_weights(tmp_path / "absent.pth", key="models.var-d16.pretrained")
    assert "absent.pth" in str(e.value) and "models.var-d16.pretrained" in str(e.value)
    with pytest.raises(ValueError, match="64 hex"):
        check_sha256("123", "tokenizer.pretrained_sha256")
    assert check_sha256("", "k") == "" and check_sha256(digest.upper(), "k") == digest


def test_torchscript_archive_given_as_a_state_dict_is_refused_without_running(tmp_path):
    marker = tmp_path / "marker"
    archive = write_torchscript(tmp_path / "ts.pt", SetStateWriter(str(marker)))
    msg = assert_refused_and_inert(lambda: load_weights(archive, sha256(archive), key="models.m.pretrained"), marker)
    assert "TorchScript archive" in msg and str(archive) in msg


# ------------------------------------------------------------------------------------ torch-fidelity Inception
@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    return path, write_random_inception_weights(path, seed=0)


def test_inception_payload_is_refused(tmp_path):
    assert_live(tmp_path)
    # The hole being closed: torch-fidelity's own constructor, given the file, runs the payload.
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    direct = tmp_path / "direct-marker"
    with pytest.raises(RuntimeError, match="Missing key"):
        FeatureExtractorInceptionV3("x", ["2048"], feature_extractor_weights_path=str(
            write_pickle_payload(tmp_path / "direct.pth", direct)))
    assert direct.exists()
    marker = tmp_path / "marker"
    payload = write_pickle_payload(tmp_path / "weights-inception-2015-12-05-6726825d.pth", marker)
    # Unpinned: the official file's sha256 prefix is required, and this file does not have it.
    assert_refused_and_inert(lambda: load_extractor("inception-v3-compat", weights_path=payload), marker,
                             WeightsHashError)
    # Pinned to its own digest (a user who trusted it): still never unpickled with code.
    msg = assert_refused_and_inert(lambda: InceptionFeatures(payload, sha256(payload)), marker,
                                   match="unpickling them would run code")
    assert str(payload) in msg and "score.inception_weights" in msg and "GLOBAL" in msg


def test_inception_weights_never_reach_torch_fidelitys_unpickler(inception_file, monkeypatch):
    path, digest = inception_file
    calls, real_load = [], torch.load

    def spy(f, *args, **kwargs):
        calls.append((type(f).__name__, kwargs.get("weights_only")))
        return real_load(f, *args, **kwargs)
    monkeypatch.setattr(torch, "load", spy)
    net = InceptionFeatures(path, digest)
    assert net.weights_sha256 == digest == sha256(path)
    unsafe = [c for c in calls if c[1] is not True]
    assert unsafe == [("BytesIO", False)], calls         # only our in-memory placeholder goes to torch-fidelity
    assert ("BufferedReader", True) in calls             # the user file: weights_only=True
    state = torch.load(path, weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in net.net.state_dict().items())
    assert_hash_refused(lambda: InceptionFeatures(path, WRONG), path, WRONG)


def test_inception_wrong_layout_is_named(tmp_path):
    path = tmp_path / "small.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, path)
    with pytest.raises(CheckpointMismatchError, match=r"small\.pth is not torch-fidelity's Inception layout"):
        InceptionFeatures(path, sha256(path))


# --------------------------------------------------------------------------------------- clean-fid TorchScript
def test_torchscript_setstate_payload_is_live_and_refused(tmp_path):
    control = tmp_path / "control-marker"
    live = write_torchscript(tmp_path / "live.pt", SetStateWriter(str(control)))
    try:
        torch.jit.load(str(live))
    except RuntimeError:
        pass   # whether or not the load then completes, the archive's code has already run
    assert control.exists()                                         # torch.jit.load runs archive code

    marker = tmp_path / "marker"
    payload = write_torchscript(tmp_path / cc.WEIGHTS_FILE_NAME, SetStateWriter(str(marker)))
    digest = sha256(payload)
    for pin in (None, "", digest[:16]):                             # not pinned in full: refused, digest shown
        msg = assert_refused_and_inert(lambda: cc.load_extractor(payload, pin), marker,
                                       match="only with its full sha256 pinned")
        assert digest in msg and "score.cleanfid_weights_sha256" in msg
    msg = assert_refused_and_inert(lambda: cc.load_extractor(payload, digest), marker)   # pinned: code scan
    assert "__setstate__" in msg and str(payload) in msg
    assert_hash_refused(lambda: cc.load_extractor(payload, WRONG), payload, WRONG)
    assert not marker.exists()


def test_torchscript_forward_payload_and_pickle_payload_are_refused(tmp_path):
    marker = tmp_path / "marker"
    forward = write_torchscript(tmp_path / "fwd.pt", ForwardWriter(str(marker)))
    msg = assert_refused_and_inert(lambda: cc.load_extractor(forward, sha256(forward)), marker)
    assert "'save'" in msg
    pickled = write_pickle_payload(tmp_path / "pickled.pt", marker)
    assert_refused_and_inert(lambda: cc.load_extractor(pickled, sha256(pickled)), marker,
                             match="not a TorchScript archive")


def test_pinned_benign_archive_loads_the_checked_bytes(tmp_path):
    path = write_torchscript(tmp_path / "benign.pt", Benign())
    data, digest = read_pinned_torchscript(path, sha256(path), key="score.cleanfid_weights")
    assert digest == sha256(path) and data == path.read_bytes()
    ex = cc.load_extractor(path, digest)
    assert ex.weights_sha256 == digest and ex.weights_path == path
    x = torch.rand(3, 2)
    assert torch.equal(ex.model.base(x), torch.jit.load(str(path))(x))


# ------------------------------------------------------------------------------------------------ LPIPS / VGG
@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    """torchvision's `features.*` key set (the classifier.* tensors are ignored by the loader) and the heads."""
    from torchvision.models import vgg16
    root = tmp_path_factory.mktemp("lpips")
    vgg, lin = root / "vgg16-397923af.pth", root / "vgg.pth"
    torch.save({f"features.{k}": v for k, v in vgg16(weights=None).features.state_dict().items()}, vgg)
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))},
               lin)
    return vgg, lin


@pytest.mark.parametrize("position", [0, 1])
def test_lpips_payload_is_refused(tmp_path, lpips_files, position):
    assert_live(tmp_path)
    marker = tmp_path / "marker"
    payload = write_pickle_payload(tmp_path / "payload.pth", marker)
    files = list(lpips_files)
    files[position] = payload
    for pins in ((), ("", ""), tuple(sha256(f) for f in files)):
        msg = assert_refused_and_inert(lambda: build_perceptual("lpips-vgg16", files, weights_sha256=pins), marker)
        assert str(payload) in msg and f"tokenizer.train.perceptual_weights[{position}]" in msg


def test_lpips_pins_and_records_digests(lpips_files):
    vgg, lin = lpips_files
    net = build_perceptual("lpips-vgg16", [vgg, lin], weights_sha256=(sha256(vgg), sha256(lin)))
    assert net.weights_sha256 == (sha256(vgg), sha256(lin))
    assert build_perceptual("lpips-vgg16", [vgg, lin]).weights_sha256 == (sha256(vgg), sha256(lin))
    assert_hash_refused(lambda: build_perceptual("lpips-vgg16", [vgg, lin], weights_sha256=("", WRONG)), lin, WRONG)
    with pytest.raises(ValueError, match=r"perceptual_weights_sha256\[1\]"):
        TokenizerTrainConfig(perceptual_weights=("a", "b"), perceptual_weights_sha256=("", "xyz"))


# ------------------------------------------------------------------------------------ released VAR / VQVAE
def _params():
    return load_params(ROOT / "params.yaml")


def test_released_var_payload_is_refused(tmp_path):
    assert_live(tmp_path)
    spec = _params().model("var-d4")
    marker = tmp_path / "marker"
    payload = write_pickle_payload(tmp_path / "var_d16.pth", marker, VAR(spec.model).state_dict())
    for pin in ("", sha256(payload)):
        msg = assert_refused_and_inert(
            lambda: import_released(VAR(spec.model), payload, pin, key="models.var-d4.pretrained"), marker)
        assert "models.var-d4.pretrained" in msg and str(payload) in msg
    assert_refused_and_inert(lambda: load_official_state_dict(VAR(spec.model), payload), marker)
    archive = write_torchscript(tmp_path / "var_ts.pth", SetStateWriter(str(marker)))
    assert_refused_and_inert(lambda: import_released(VAR(spec.model), archive, key="models.var-d4.pretrained"),
                             marker, match="TorchScript archive")


def test_released_vqvae_payload_is_refused(tmp_path):
    assert_live(tmp_path)
    cfg = _params().tokenizer.model
    marker = tmp_path / "marker"
    payload = write_pickle_payload(tmp_path / "vae_ch160v4096z32.pth", marker, {"model": VQVAE(cfg).state_dict()})
    for key in ("tokenizer.pretrained", "tokenizer.train.init_from"):
        for pin in ("", sha256(payload)):
            msg = assert_refused_and_inert(
                lambda: init_tokenizer_weights(VQVAE(cfg), payload, lambda s: None, expected_sha256=pin, key=key),
                marker)
            assert key in msg


def test_released_files_pinned_right_load_and_wrong_are_refused(tmp_path):
    p = _params()
    src_var, src_vq = VAR(p.model("var-d4").model), VQVAE(p.tokenizer.model)
    torch.save(src_var.state_dict(), tmp_path / "var.pth")                 # bare state dict (released layout)
    torch.save({"model": src_vq.state_dict()}, tmp_path / "vae.pth")       # {'model': ...} wrapper
    dst = VAR(p.model("var-d4").model)
    assert import_released(dst, tmp_path / "var.pth", sha256(tmp_path / "var.pth"), key="k") == \
        sha256(tmp_path / "var.pth")
    assert all(torch.equal(a, b) for a, b in zip(src_var.state_dict().values(), dst.state_dict().values()))
    vq = VQVAE(p.tokenizer.model)
    assert init_tokenizer_weights(vq, tmp_path / "vae.pth", lambda s: None,
                                  expected_sha256=sha256(tmp_path / "vae.pth")) == sha256(tmp_path / "vae.pth")
    assert all(torch.equal(a, b) for a, b in zip(src_vq.state_dict().values(), vq.state_dict().values()))
    assert_hash_refused(lambda: import_released(VAR(p.model("var-d4").model), tmp_path / "var.pth", WRONG, key="k"),
                        tmp_path / "var.pth", WRONG)
    assert_hash_refused(lambda: init_tokenizer_weights(VQVAE(p.tokenizer.model), tmp_path / "vae.pth",
                                                       expected_sha256=WRONG), tmp_path / "vae.pth", WRONG)


# -------------------------------------------------------------------------------------------- params + stages
def _raw(**sections):
    raw = load_raw(ROOT / "params.yaml")
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v}
    return raw


def test_sha256_params_keys_are_validated():
    good = "0123456789abcdef" * 4
    p = build_params(_raw(tokenizer={"pretrained": "v.pth", "pretrained_sha256": good},
                          score={"inception_weights_sha256": good, "cleanfid_weights_sha256": good}))
    assert p.tokenizer.pretrained_sha256 == good and p.score.inception_weights_sha256 == good
    raw = _raw()
    raw["models"]["var-d4"]["pretrained_sha256"] = good
    assert build_params(raw).model("var-d4").pretrained_sha256 == good
    for section, key in [("tokenizer", "pretrained_sha256"), ("score", "inception_weights_sha256"),
                         ("score", "cleanfid_weights_sha256")]:
        for bad in ("6726825d", "g" * 64, good + "0"):
            with pytest.raises(ConfigError, match=f"{key}.*64 hex"):
                build_params(_raw(**{section: {key: bad}}))
    raw = _raw()
    raw["models"]["var-d4"]["pretrained_sha256"] = "abc"
    with pytest.raises(ConfigError, match=r"models\.var-d4\.pretrained_sha256"):
        build_params(raw)
    for key in ("init_from_sha256", "perceptual_weights_sha256"):
        with pytest.raises(ConfigError, match=key):
            build_params(_raw(tokenizer={"train": {key: "abc" if key == "init_from_sha256" else ["abc"]}}))


def _stage_args(tmp_path, over: dict, **kw):
    (tmp_path / "over.yaml").write_text(yaml.safe_dump(over))
    return argparse.Namespace(params=str(ROOT / "params.yaml"), configfile=[str(tmp_path / "over.yaml")],
                              device="cpu", setting="", scales="all", job="", **kw)


def test_stages_thread_the_pins_and_record_the_digest(tmp_path):
    import json

    import pipeline.stages.import_weights as import_stage  # import_tokenizer / import_var
    p = _params()
    torch.save(VQVAE(p.tokenizer.model).state_dict(), tmp_path / "vae.pth")
    torch.save(VAR(p.model("var-d4").model).state_dict(), tmp_path / "var.pth")
    vae_sha, var_sha = sha256(tmp_path / "vae.pth"), sha256(tmp_path / "var.pth")
    log = logging.getLogger("test")

    tok = dict(kind="vqvae", model_name="", model=str(tmp_path / "tok.pt"), metrics=str(tmp_path / "tok.json"),
               summary="")
    args = _stage_args(tmp_path, {"tokenizer": {"pretrained": str(tmp_path / "vae.pth"), "pretrained_sha256": WRONG}},
                       **tok)
    assert_hash_refused(lambda: import_stage.main(args, log), tmp_path / "vae.pth", WRONG)
    args = _stage_args(tmp_path, {"tokenizer": {"pretrained": str(tmp_path / "vae.pth"),
                                                "pretrained_sha256": vae_sha}}, **tok)
    assert import_stage.main(args, log)["sha256"] == vae_sha[:16]
    assert json.loads((tmp_path / "tok.json").read_text())["pretrained_sha256"] == vae_sha

    tv = dict(kind="var", model_name="var-d4", model=str(tmp_path / "var.pt"), metrics=str(tmp_path / "var.json"),
              summary="")
    over = {"models": {"var-d4": {"pretrained": str(tmp_path / "var.pth"), "pretrained_sha256": WRONG}}}
    args = _stage_args(tmp_path, over, **tv)
    assert_hash_refused(lambda: import_stage.main(args, log), tmp_path / "var.pth", WRONG)
    over["models"]["var-d4"]["pretrained_sha256"] = var_sha
    args = _stage_args(tmp_path, over, **tv)
    assert import_stage.main(args, log)["sha256"] == var_sha[:16]
    assert json.loads((tmp_path / "var.json").read_text())["pretrained_sha256"] == var_sha

    marker = tmp_path / "marker"
    write_pickle_payload(tmp_path / "var.pth", marker, VAR(p.model("var-d4").model).state_dict())
    over["models"]["var-d4"]["pretrained_sha256"] = ""
    args = _stage_args(tmp_path, over, **tv)
    assert_refused_and_inert(lambda: import_stage.main(args, log), marker)


def test_score_stage_passes_the_inception_pin(tmp_path, monkeypatch):
    import pipeline.stages.score as stage
    calls = []

    def spy(samples, real, **kwargs):
        calls.append(kwargs)
        return {"fid_inception": 1.0}
    monkeypatch.setattr(stage, "score", spy)
    loads = []
    monkeypatch.setattr(stage, "load_extractor", lambda name, **kw: loads.append(kw) or name)
    good = "0123456789abcdef" * 4
    args = _stage_args(tmp_path, {"score": {"extractor": "inception", "inception_weights": "w.pth",
                                            "inception_weights_sha256": good}},
                       name="m", samples=str(tmp_path / "s.npz"), seed_samples="", sample_metrics="", real="r.npz",
                       evalnet="e.pt", untrained=None,
                       scores=str(tmp_path / "scores.json"))
    import numpy as np
    np.savez(args.samples, images=np.zeros((2, 32, 32, 3), np.uint8))     # the default data.image_size
    stage.main(args, logging.getLogger("test"))
    assert loads[0]["expected_sha256"] == good and loads[0]["weights_path"] == "w.pth"   # the pin reaches the loader
    assert len(calls) == 1


# ------------------------------------------------------------------------------------------ rejection classifier
def test_rejection_classifier_payload_and_wrong_pin_are_refused(tmp_path):
    """`sampler.rejection.classifier_weights` (a torchvision state dict): a pickle payload never runs, a wrong pin is
    refused naming both digests, and the digest loaded is recorded in the row's description."""
    import torchvision

    from eval.classifiers import rejection_classifier
    from var.config import build_config
    from var.config.sampling import RejectionConfig
    assert_live(tmp_path)
    marker = tmp_path / "marker"
    payload = write_pickle_payload(tmp_path / "resnet18.pth", marker)
    rc = build_config(RejectionConfig, {"threshold": 0.5, "classifier_weights": str(payload),
                                        "classifier_arch": "resnet18", "classifier_weights_sha256": sha256(payload)},
                      "rows.r.sampler.rejection")
    msg = assert_refused_and_inert(lambda: rejection_classifier(rc, None, "cpu", "rows.r.sampler.rejection"), marker)
    assert "rows.r.sampler.rejection.classifier_weights" in msg
    torch.manual_seed(0)
    good = tmp_path / "good.pth"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=3).state_dict(), good)
    wrong = build_config(RejectionConfig, {"threshold": 0.5, "classifier_weights": str(good),
                                           "classifier_arch": "resnet18", "classifier_weights_sha256": WRONG},
                         "rows.r.sampler.rejection")
    assert_hash_refused(lambda: rejection_classifier(wrong, None, "cpu", "rows.r.sampler.rejection"), good, WRONG)
    right = build_config(RejectionConfig, {"threshold": 0.5, "classifier_weights": str(good),
                                           "classifier_arch": "resnet18", "classifier_weights_sha256": sha256(good)},
                         "rows.r.sampler.rejection")
    _, described = rejection_classifier(right, None, "cpu", "rows.r.sampler.rejection")
    assert sha256(good) in described
    with pytest.raises(ValueError, match="classifier_weights_sha256"):
        build_config(RejectionConfig, {"classifier_weights_sha256": "abc"}, "rows.r.sampler.rejection")
