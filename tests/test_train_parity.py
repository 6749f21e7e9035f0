"""Our training step equals the reference trainer's, step for step (../shared/fixtures/FIXTURES_train.md).

Driven by fixture files: every path in VAR_TRAIN_FIXTURES (comma-separated; default the in-repo compact copy of
fixture A, tests/data/fixture_train_A_compact.pt, see tests/data/README.md) is replayed through OUR code: the model
and tokenizer are built from the fixture's `config` and its initial weights loaded by the official-checkpoint
importer (var.checkpoint.load_official_state_dict); every recorded reference setting is mapped onto TrainConfig by
`train_config_from_fixture` (through var.reference_args.train_config_from_reference), which raises on one we cannot
map; the optimizer is make_optimizer / param_groups, the schedule var.schedule, and each step is var.train.train_step,
the function train_var's loop calls. Target tokens are our tokenizer's encoding of the recorded images (compared
with the recorded `gt_BL`); the compact copy has no images and uses `gt_BL`. The reference's random decisions
(labels after classifier-free-guidance dropout, drop-path keep masks) are injected through the test-only
`injected` argument of train_step (var.blocks.InjectedRandomness); everything else is computed.

Compared every step (tolerances of FIXTURES_train.md section 10; the loss 1e-6 relative): parameter-group
membership and lr / weight decay per group (1e-12 relative), loss, per-scale CE and the logged Lm / Lt (1e-5),
per-scale accuracy (one token), gradient norm (1e-5) and clip decision (equal; factor 1e-6), per-parameter gradient
norms and the probe gradients (2e-5 relative), the weights after step 1 and at the end (1e-5 absolute and 2e-5
relative L2 per tensor, buffers equal), and the AdamW moments after step 1 and at the end (1e-4 relative L2).
Measured on fixture A: weights within 1.5e-6 (largest at entries whose step-1 gradient is below AdamW's eps, where
the first update g / (|g| + eps) magnifies a rounding difference), loss within 1.1e-7 relative; the recipe mistakes
of FIXTURES_train.md section 10 move the final weights by >= 1e-4 and each fails several checks.

Where our trainer differs from the reference on purpose (none of it changes a number beyond float rounding here):
* AdamW runs PyTorch's single-tensor loop on CPU, the reference the fused kernel (FIXTURES_train.md: 4.5e-8 in
  the final weights); the per-scale CE is a mean of per-token losses (summation order).
* Our parameter groups come in the order [decay, no decay] (the reference: [no decay, decay]); they are matched by
  membership. The no-decay name list lacks the reference's `moe_bias` (no such parameter exists here).
* Label dropout draws from its own generator and drop path from the global RNG (the reference: both global), so a
  replay injects the recorded decisions instead of seeding.
* var.schedule has 'const' (not in the reference), lacks 'lin<T>' (progressive training's; refused by the mapping)
  and guards the division by zero that the reference hits when the warm-up ends at the last iteration; TrainConfig.epochs defaults to 200 (the reference's `ep` to 250; every
  config sets it or max_steps). Every other default equals the reference's (tests/test_imagenet_configs.py).
"""
from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from var.blocks import InjectedRandomness
from var.checkpoint import configs_from_reference, load_official_state_dict
from var.config import TrainConfig
from var.reference_args import train_config_from_reference
from var.token_data import var_inputs
from var.token_loss import make_loss_fn
from var.train import make_optimizer, schedule_lengths, train_step
from var.transformer import VAR
from var.vqvae import VQVAE

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_FIXTURE = DATA / "fixture_train_A_compact.pt"
FIXTURE_PATHS = [p for p in os.environ.get("VAR_TRAIN_FIXTURES", str(DEFAULT_FIXTURE)).split(",") if p]

TOL_LR_REL = 1e-12
TOL_LOSS_REL = 1e-6
TOL_CE, TOL_GRAD_NORM, TOL_CLIP_COEF = 1e-5, 1e-5, 1e-6
TOL_GRAD_REL = 2e-5
TOL_W_ABS, TOL_W_REL = 1e-5, 2e-5
TOL_MOMENT_REL = 1e-4
TOL_TF_INPUT = 1e-5         # teacher-forcing input, as test_official_parity's f_hat


def _fixture_io():
    """tests/data/make_compact_train_fixture.py by its path (a top-level `tests` package of torch-fidelity shadows
    `tests.data`)."""
    spec = importlib.util.spec_from_file_location("make_compact_train_fixture", DATA / "make_compact_train_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fixture_io = _fixture_io()


# ------------------------------------------------------------------------------------------------ settings
def train_config_from_fixture(config: dict) -> tuple[TrainConfig, int]:
    """Every recorded reference setting of a training fixture, mapped onto TrainConfig; raises ValueError naming a
    setting we cannot map. Returns (cfg, number of training samples that gives the recorded iterations per epoch).

    `config.args` (the reference flags) go through var.reference_args.train_config_from_reference; the other
    sections are checked against them and against what our trainer does."""
    args, amp, loss, opt = config["args"], config["amp"], config["loss"], config["optimizer"]

    def require(ok: bool, what: str):
        if not ok:
            raise ValueError(f"fixture config {what}: no equivalent in our trainer")

    require(opt["cls"] == "torch.optim.AdamW", f"optimizer.cls={opt['cls']!r}")
    # The schedule sets every group's weight decay before each step, so the constructor's value is never used
    # (ours: 0 as well).
    require(opt.get("initial_weight_decay", 0) == 0, f"optimizer.initial_weight_decay={opt['initial_weight_decay']}")
    require(amp["mixed_precision"] == args.get("fp16", 0),
            f"amp.mixed_precision={amp['mixed_precision']} vs args.fp16={args.get('fp16', 0)}")
    require(amp["n_gradient_accumulation"] == 1 and amp.get("r_accu", 1.0) == 1.0,
            f"amp.n_gradient_accumulation={amp['n_gradient_accumulation']}")
    require(amp["grad_clip"] == args["tclip"], f"amp.grad_clip={amp['grad_clip']} vs args.tclip={args['tclip']}")
    # Ours clips before the step whenever grad_clip > 0 (the reference's early clipping); late clipping is its path
    # for optimizers that clip themselves.
    require(bool(amp["early_clipping"]) == (args["tclip"] > 0) and not amp["late_clipping"],
            f"amp.early_clipping={amp['early_clipping']} / late_clipping={amp['late_clipping']}")
    require(loss["label_smooth"] == args["ls"], f"loss.label_smooth={loss['label_smooth']} vs args.ls={args['ls']}")
    # Uniform per-token weights 1/L, summed over tokens and averaged over the batch: var.train.mean_token_loss.
    L = loss["L"]
    require(loss["loss_weight_value"] == torch.tensor(1.0 / L, dtype=torch.float32).item(),
            f"loss.loss_weight_value={loss['loss_weight_value']} (not uniform 1/L)")
    rnd = config["randomness"]
    require(rnd["null_class"] == config["var"]["num_classes"], f"randomness.null_class={rnd['null_class']}")
    require(rnd["cond_drop_rate"] == config["var"]["cond_drop_rate"],
            f"randomness.cond_drop_rate={rnd['cond_drop_rate']}")

    cfg = train_config_from_reference(args, adamw={k: opt[k] for k in ("betas", "eps", "amsgrad", "maximize")},
                                      weights_given=True)
    num_train = config["iters_train"] * cfg.batch_size
    iters, max_it, warmup_it = schedule_lengths(cfg, num_train)
    require((iters, max_it) == (config["iters_train"], config["max_it"]),
            f"iters_train={config['iters_train']} / max_it={config['max_it']} (ours {iters} / {max_it})")
    require(warmup_it == config["wp_it_unrounded"] and round(warmup_it) == config["wp_it_rounded"],
            f"wp_it={config['wp_it_unrounded']} (ours {warmup_it})")
    return cfg, num_train


# ------------------------------------------------------------------------------------------------ models
def build_models(fx: dict) -> tuple[VAR, VQVAE]:
    """Our VAR with the fixture's initial weights and our tokenizer with its weights, both through the importer.
    The tokenizer keys the fixture omits (FIXTURES_train.md 2.1: decoder and the codebook-usage buffer; the compact
    copy also the encoder) are never read by a training step and keep our model's own values."""
    vq_cfg, var_cfg = configs_from_reference(fx["config"]["vqvae"], fx["config"]["var"])
    var = load_official_state_dict(VAR(var_cfg), fx["var_state_init"])
    vq = VQVAE(vq_cfg)
    omitted = tuple(fx["config"].get("vae_source", {}).get("omitted_keys_prefixes", ()))
    state = dict(fx["vae_state_dict"])
    missing = [k for k in vq.state_dict() if k not in state]
    bad = [k for k in missing if not k.startswith(omitted)]
    if bad:
        raise ValueError(f"vae_state_dict lacks {bad[:5]} (not under the omitted prefixes {omitted})")
    state.update({k: vq.state_dict()[k] for k in missing})
    load_official_state_dict(vq, state)
    return var, vq.eval()


def drop_path_keep(fx: dict, step: dict, model: VAR) -> torch.Tensor:
    """The recorded keep masks (modules, 2, B) as (depth, 2, B), after checking that the reference's drop-path
    modules are our blocks with a drop rate > 0, at the same rate and the same 1/keep_prob multiplier."""
    mods = fx["config"]["randomness"]["drop_path_modules"]
    B = step["effective_labels"].shape[0]
    ours = [b.drop_path.p for b in model.blocks]
    listed = [m["block"] for m in mods]
    assert listed == [i for i, p in enumerate(ours) if p > 0], f"drop-path blocks: reference {listed}, ours {ours}"
    keep = torch.ones(len(model.blocks), 2, B, dtype=torch.bool)
    for m, rec in zip(mods, step["drop_path_keep"]):
        p = ours[m["block"]]
        assert math.isclose(p, m["drop_prob"], rel_tol=1e-7), \
            f"drop rate of block {m['block']}: {p} vs {m['drop_prob']}"
        mult = torch.ones(1).div_(1 - p).item()     # what drop_path_masks multiplies a kept branch by
        assert math.isclose(mult, m["kept_multiplier_f32"], rel_tol=1e-6), f"drop-path multiplier {mult}"
        keep[m["block"]] = rec
    return keep


# ------------------------------------------------------------------------------------------------ replay
@dataclass
class Replay:
    """What our code produced, per step and at the two recorded points."""
    group_lr: list = field(default_factory=list)        # per step: {fixture group name: lr}
    group_wd: list = field(default_factory=list)
    groups: dict = field(default_factory=dict)          # our group index -> (wd_scale, set of names)
    token_mismatch: list = field(default_factory=list)  # per step: tokens differing from gt_BL (None: no images)
    tf_input_err: float | None = None                   # step 0 teacher-forcing input vs the recorded one
    loss: list = field(default_factory=list)
    ce: list = field(default_factory=list)
    acc: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)
    clip_coef: list = field(default_factory=list)
    clipped: list = field(default_factory=list)
    grad_norm_per_param: list = field(default_factory=list)
    probe_grads: list = field(default_factory=list)
    state_after_step1: dict = field(default_factory=dict)
    state_final: dict = field(default_factory=dict)
    adam_after_step1: dict = field(default_factory=dict)
    adam_final: dict = field(default_factory=dict)


def _adam_state(opt, params: dict, names) -> dict:
    return {n: {k: v.detach().clone() for k, v in opt.state[params[n]].items()} for n in names}


def _tokens(vq: VQVAE, step: dict, pns) -> tuple[torch.Tensor, int | None]:
    """Our tokenizer's tokens of the step's images (B, L) and how many differ from gt_BL; gt_BL without images."""
    if "images_uint8" not in step:
        return step["gt_BL"], None
    img_B3HW = step["images_uint8"].float() / 127.5 - 1.0    # var.data.ImageSplit's conversion
    with torch.no_grad():
        idx_BL = torch.cat(vq.img_to_idx(img_B3HW), dim=1)
    return idx_BL, int((idx_BL != step["gt_BL"]).sum())


def replay(fx: dict) -> Replay:
    """Run the fixture's optimizer steps through our trainer (one thread, as recorded)."""
    cfg, num_train = train_config_from_fixture(fx["config"])
    _, max_it, warmup_it = schedule_lengths(cfg, num_train)
    model, vq = build_models(fx)
    model.train()
    pns = model.patch_nums
    params = dict(model.named_parameters())
    assert list(params) == list(fx["param_names"]), "parameter names / order differ from the reference's"
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    loss_fn = make_loss_fn(cfg)
    label_gen = torch.Generator().manual_seed(cfg.seed + 1)     # not drawn from: the decisions are injected
    name_of = {id(p): n for n, p in params.items()}
    rp = Replay(groups={i: (g["wd_scale"], {name_of[id(p)] for p in g["params"]})
                        for i, g in enumerate(opt.param_groups)})
    ref_groups = [(g["name"], set(g["param_names"])) for g in fx["param_groups"]]
    adam_names = list(fx["adam_state_final"])
    for i, step in enumerate(fx["steps"]):
        if step["g_it"] != i or not step["stepping"] or step["prog_si"] != -1:
            raise ValueError(f"step {i}: g_it {step['g_it']}, stepping {step['stepping']}, prog_si "
                             f"{step['prog_si']}: only one optimizer step per iteration, no progressive training")
        idx_BL, mismatch = _tokens(vq, step, pns)
        rp.token_mismatch.append(mismatch)
        if "x_BLCv_wo_first_l" in step:
            rp.tf_input_err = (var_inputs(vq, idx_BL, pns) - step["x_BLCv_wo_first_l"]).abs().max().item()
        injected = InjectedRandomness(label_B=step["effective_labels"], drop_path_keep=drop_path_keep(fx, step, model))
        res = train_step(model, opt, vq, idx_BL, step["labels"], cfg, step=step["g_it"], max_it=max_it,
                         warmup_it=warmup_it, loss_fn=loss_fn, label_gen=label_gen, metrics=True, injected=injected)
        assert res.finite, f"step {i}: non-finite loss or gradient"
        by_names = {frozenset(names): g for names, g in
                    ((frozenset(n), opt.param_groups[j]) for j, (_, n) in rp.groups.items())}
        rp.group_lr.append({name: by_names[frozenset(n)]["lr"] for name, n in ref_groups if frozenset(n) in by_names})
        rp.group_wd.append({name: by_names[frozenset(n)]["weight_decay"] for name, n in ref_groups
                            if frozenset(n) in by_names})
        rp.loss.append(res.loss.item())
        rp.ce.append(res.ce_per_scale.clone())
        rp.acc.append(res.acc_per_scale.clone())
        rp.grad_norm.append(res.grad_norm.item())
        rp.clip_coef.append(res.clip_coef.item())
        rp.clipped.append(res.clipped)
        # The gradients are left clipped after the step: divided by the factor they are the ones before clipping.
        c = res.clip_coef
        rp.grad_norm_per_param.append(torch.stack([params[n].grad.norm() / c for n in fx["param_names"]]))
        rp.probe_grads.append({n: params[n].grad / c for n in step["probe_grads"]})
        if i == 0:
            rp.state_after_step1 = {k: v.clone() for k, v in model.state_dict().items()}
            rp.adam_after_step1 = _adam_state(opt, params, adam_names)
    rp.state_final = {k: v.clone() for k, v in model.state_dict().items()}
    rp.adam_final = _adam_state(opt, params, adam_names)
    return rp


# ------------------------------------------------------------------------------------------------ comparisons
def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check_param_groups(fx, rp):
    ours = {frozenset(n): s for s, n in rp.groups.values()}
    for g in fx["param_groups"]:
        names = frozenset(g["param_names"])
        assert names in ours, f"param group {g['name']}: no group of ours has exactly its parameters " \
                              f"(ours: {[sorted(n)[:3] for n in ours]} ...)"
        assert ours[names] == g["wd_sc"], f"param group {g['name']}: weight-decay scale {ours[names]} vs {g['wd_sc']}"
        assert g["lr_sc"] == 1.0, f"param group {g['name']}: lr scale {g['lr_sc']} (ours are all 1)"
    assert len(ours) == len(fx["param_groups"]), f"param groups: {len(ours)} of ours vs {len(fx['param_groups'])}"
    return 0.0


def check_lr_wd(fx, rp):
    worst = 0.0
    for i, step in enumerate(fx["steps"]):
        for j, g in enumerate(fx["param_groups"]):
            assert g["name"] in rp.group_lr[i], f"step {i} group {g['name']}: no group of ours has its parameters"
            for what, ours, ref in (("lr", rp.group_lr[i][g["name"]], step["group_lr"][j]),
                                    ("weight decay", rp.group_wd[i][g["name"]], step["group_weight_decay"][j])):
                err = abs(ours - ref) / abs(ref) if ref else abs(ours)
                worst = max(worst, err)
                assert err <= TOL_LR_REL, f"step {i} group {g['name']} {what}: {ours!r} vs {ref!r}"
    return worst


def check_tokens(fx, rp):
    for i, n in enumerate(rp.token_mismatch):
        assert n in (None, 0), f"step {i} target tokens: ours differ from gt_BL at {n} positions"
    if rp.tf_input_err is not None:
        assert rp.tf_input_err <= TOL_TF_INPUT, f"teacher-forcing input: max abs error {rp.tf_input_err:.3g}"
    return rp.tf_input_err or 0.0


def check_loss(fx, rp):
    worst = 0.0
    for i, step in enumerate(fx["steps"]):
        ref = step["loss"].item()
        err = abs(rp.loss[i] - ref) / abs(ref)
        worst = max(worst, err)
        assert err <= TOL_LOSS_REL, f"step {i} loss: {rp.loss[i]!r} vs {ref!r} (relative error {err:.3g})"
    return worst


def check_ce_per_scale(fx, rp):
    """Per-scale CE and the logged means: Lm over every token, Lt over the last scale's."""
    worst = 0.0
    sizes = torch.tensor([e - b for b, e in fx["config"]["loss"]["begin_ends"]], dtype=torch.float64)
    for i, step in enumerate(fx["steps"]):
        err = (rp.ce[i] - step["ce_per_scale"]).abs().max().item()
        lm = (rp.ce[i].double() * sizes).sum().item() / sizes.sum().item()
        errs = {"ce_per_scale": err, "Lm": abs(lm - step["official_metrics"]["Lm"]),
                "Lt": abs(rp.ce[i][-1].item() - step["official_metrics"]["Lt"])}
        for what, e in errs.items():
            worst = max(worst, e)
            assert e <= TOL_CE, f"step {i} {what}: max abs error {e:.3g}"
    return worst


def check_accuracy(fx, rp):
    """Argmax accuracy per scale and the logged Accm / Acct (%, all tokens / last scale): at most one token per scale
    may flip on a near tie."""
    sizes = torch.tensor([e - b for b, e in fx["config"]["loss"]["begin_ends"]], dtype=torch.float64)
    worst = 0
    for i, step in enumerate(fx["steps"]):
        B = step["gt_BL"].shape[0]
        hits = rp.acc[i].double() * sizes * B
        flips = ((rp.acc[i].double() - step["acc_per_scale"].double()).abs() * sizes * B).round().max().item()
        worst = max(worst, flips)
        assert flips <= 1, f"step {i} accuracy per scale: ours {rp.acc[i].tolist()} vs {step['acc_per_scale'].tolist()}"
        for what, ours, n in (("Accm", 100 * hits.sum().item() / (B * sizes.sum().item()), B * sizes.sum().item()),
                              ("Acct", 100 * hits[-1].item() / (B * sizes[-1].item()), B * sizes[-1].item())):
            ref = step["official_metrics"][what]
            assert abs(ours - ref) <= 100 / n + 1e-9, f"step {i} {what}: {ours} vs {ref} %"
    return worst


def check_grad_norm_and_clip(fx, rp):
    worst = 0.0
    for i, step in enumerate(fx["steps"]):
        err = abs(rp.grad_norm[i] - step["grad_norm"].item())
        worst = max(worst, err)
        assert err <= TOL_GRAD_NORM, f"step {i} grad norm: {rp.grad_norm[i]!r} vs {step['grad_norm'].item()!r}"
        assert rp.clipped[i] == step["clipped"], \
            f"step {i} clip decision: ours {rp.clipped[i]}, reference {step['clipped']}"
        e = abs(rp.clip_coef[i] - step["clip_coef"].item())
        assert e <= TOL_CLIP_COEF, f"step {i} clip factor: {rp.clip_coef[i]!r} vs {step['clip_coef'].item()!r}"
    return worst


def check_gradients(fx, rp):
    """Per-parameter gradient norms and the full probe gradients, before clipping."""
    worst = 0.0
    for i, step in enumerate(fx["steps"]):
        ref = step["grad_norm_per_param"]
        rel = ((rp.grad_norm_per_param[i] - ref).abs() / ref.clamp_min(1e-30)).max().item()
        worst = max(worst, rel)
        assert rel <= TOL_GRAD_REL, f"step {i} grad norm per parameter: max relative error {rel:.3g}"
        for n, g in step["probe_grads"].items():
            r = _rel_l2(rp.probe_grads[i][n], g)
            worst = max(worst, r)
            assert r <= TOL_GRAD_REL, f"step {i} gradient of {n}: relative L2 error {r:.3g}"
    return worst


def _check_state(ours: dict, ref: dict, what: str) -> float:
    assert set(ours) == set(ref), f"{what}: keys differ: {sorted(set(ours) ^ set(ref))}"
    worst = 0.0
    for k, r in ref.items():
        o = ours[k]
        if not r.is_floating_point() or not r.isfinite().all():     # buffers: level indices, the -inf mask
            assert torch.equal(o, r), f"{what}[{k}]: buffer differs"
            continue
        err = (o - r).abs().max().item()
        rel = _rel_l2(o, r) if r.norm() > 0 else err
        worst = max(worst, err)
        assert err <= TOL_W_ABS, f"{what}[{k}]: max abs error {err:.3g} > {TOL_W_ABS}"
        assert rel <= TOL_W_REL, f"{what}[{k}]: relative L2 error {rel:.3g} > {TOL_W_REL}"
    return worst


def check_weights_after_step1(fx, rp):
    return _check_state(rp.state_after_step1, fx["var_state_after_step1"], "var_state_after_step1")


def check_weights_final(fx, rp):
    return _check_state(rp.state_final, fx["var_state_final"], "var_state_final")


def _check_adam(ours: dict, ref: dict, what: str) -> float:
    worst = 0.0
    for n, st in ref.items():
        assert ours[n]["step"].item() == st["step"].item(), f"{what}[{n}] step: {ours[n]['step']} vs {st['step']}"
        for k in ("exp_avg", "exp_avg_sq"):
            r = _rel_l2(ours[n][k], st[k])
            worst = max(worst, r)
            assert r <= TOL_MOMENT_REL, f"{what}[{n}].{k}: relative L2 error {r:.3g} > {TOL_MOMENT_REL}"
    return worst


def check_adam_moments(fx, rp):
    return max(_check_adam(rp.adam_after_step1, fx["adam_state_after_step1"], "adam_state_after_step1"),
               _check_adam(rp.adam_final, fx["adam_state_final"], "adam_state_final"))


CHECKS = {"param_groups": check_param_groups, "lr_wd": check_lr_wd, "tokens": check_tokens, "loss": check_loss,
          "ce_per_scale": check_ce_per_scale, "accuracy": check_accuracy,
          "grad_norm_and_clip": check_grad_norm_and_clip, "gradients": check_gradients,
          "weights_after_step1": check_weights_after_step1, "weights_final": check_weights_final,
          "adam_moments": check_adam_moments}


def compare(fx: dict, rp: Replay) -> dict[str, float]:
    """Every check; raises AssertionError naming the first quantity out of tolerance, else the worst deviations."""
    return {name: fn(fx, rp) for name, fn in CHECKS.items()}


# ------------------------------------------------------------------------------------------------ tests
@pytest.fixture(scope="module", params=FIXTURE_PATHS, ids=[os.path.basename(p) for p in FIXTURE_PATHS])
def replayed(request):
    n = torch.get_num_threads()
    torch.set_num_threads(1)        # recorded with one thread
    try:
        fx = fixture_io.load_train_fixture(request.param)
        yield fx, replay(fx)
    finally:
        torch.set_num_threads(n)


@pytest.mark.parametrize("check", list(CHECKS))
def test_train_step_matches_reference(replayed, check):
    fx, rp = replayed
    CHECKS[check](fx, rp)


# ------------------------------------------------------------------------------------------------ the test bites
@pytest.fixture(scope="module")
def compact_fixture():
    return fixture_io.load_train_fixture(DEFAULT_FIXTURE)


def _replay_file(fx: dict, path: Path) -> dict[str, float]:
    """Save `fx` (full layout), load it back as the test does and compare a replay against it."""
    torch.save(fx, path)
    loaded = fixture_io.load_train_fixture(path)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return compare(loaded, replay(loaded))
    finally:
        torch.set_num_threads(n)


def test_rejects_shifted_final_weights(compact_fixture, tmp_path):
    fx = dict(compact_fixture, var_state_final=dict(compact_fixture["var_state_final"]))
    fx["var_state_final"]["blocks.1.ffn.fc1.weight"] = fx["var_state_final"]["blocks.1.ffn.fc1.weight"] + 1e-3
    with pytest.raises(AssertionError, match=r"var_state_final\[blocks\.1\.ffn\.fc1\.weight\]: max abs error"):
        _replay_file(fx, tmp_path / "shifted.pt")


def test_rejects_changed_effective_labels(compact_fixture, tmp_path):
    steps = [dict(s) for s in compact_fixture["steps"]]
    eff = steps[2]["effective_labels"].clone()
    eff[0] = (eff[0] + 1) % compact_fixture["config"]["var"]["num_classes"]     # another real class
    steps[2]["effective_labels"] = eff
    fx = dict(compact_fixture, steps=steps)
    with pytest.raises(AssertionError, match=r"step 2 loss"):
        _replay_file(fx, tmp_path / "labels.pt")


def test_fixture_settings_we_cannot_map_are_refused(compact_fixture):
    cfg = compact_fixture["config"]
    for section, key, value, named in (("args", "pg", 0.5, "pg"), ("args", "ac", 2, "ac"),
                                       ("args", "fp16", 1, "fp16"), ("args", "sche", "lin7", "sche"),
                                       ("args", "brand_new_flag", 1, "brand_new_flag"),
                                       ("amp", "late_clipping", True, "late_clipping"),
                                       ("loss", "loss_weight_value", 0.5, "loss_weight_value"),
                                       ("optimizer", "amsgrad", True, "amsgrad")):
        bad = {**cfg, section: {**cfg[section], key: value}}
        with pytest.raises(ValueError, match=named):
            train_config_from_fixture(bad)


def test_uint8_conversion_equals_the_reference_formula():
    """Our data stage's u / 127.5 - 1 is the reference's 2 (u / 255) - 1 (FIXTURES_train.md section 4) in float32."""
    u = torch.arange(256, dtype=torch.uint8).float()
    assert torch.equal(u / 127.5 - 1.0, (u / 255) * 2 - 1)


def test_compact_copy_reconstruction_error_is_small(compact_fixture):
    """The compact copy's lossy weights are within a tenth of the comparison tolerances (its own record)."""
    info = compact_fixture["compaction"]
    assert info["abs_error_bound"] <= TOL_W_ABS / 10 and info["rel_error_bound"] <= TOL_W_REL / 10
    for key, m in info["measured"].items():
        assert m["max_abs_error"] <= info["abs_error_bound"] and m["max_rel_l2_error"] <= info["rel_error_bound"], key
