"""The reference implementation's training flags (FoundationVision/VAR `utils/arg_util.py: Args`) as a TrainConfig.

One explicit table: every flag is either mapped onto a TrainConfig field, checked to be a value whose behaviour we
implement, or set aside with the reason (model / data flags belong to the model and data configs; speed flags
change float rounding only). A flag outside the table, or a value we do not implement, raises ValueError naming
it: a recipe is never translated silently into something else. Used by tests/test_train_parity.py (the recorded
reference training steps) and tests/test_imagenet_configs.py (the released recipes).

Deliberate differences of our trainer, none of them reachable from reference flags: schedule 'const'; the lr
schedule's post-warm-up denominator is at least 1 (the reference divides by zero when the warm-up ends at the
last iteration); AdamW runs its single-tensor loop on CPU (the reference: fused; the same update to float rounding).
Torch-free, like var/config.
"""
from __future__ import annotations

from typing import Any, Mapping

from var.config import TrainConfig
from var.schedule import SCHEDULES

# The reference's defaults of the flags this module reads (Args class attributes at the reference commit).
# Unset derived flags (`tlr`, `batch_size`, `glb_batch_size`) are computed from these as the reference does.
REFERENCE_TRAIN_DEFAULTS: dict[str, Any] = {
    "bs": 768, "ep": 250, "tblr": 1e-4, "twd": 0.05, "twde": 0.0, "tclip": 2.0, "ls": 0.0,
    "wp": 0.0, "wp0": 0.005, "wpe": 0.01, "sche": "lin0", "opt": "adamw", "afuse": True, "fp16": 0, "ac": 1,
    "pg": 0.0, "pg0": 4, "pgwp": 0.0, "ini": -1.0, "hd": 0.02, "aln": 0.5, "alng": 1e-5, "seed": None,
}
# AdamW as the reference's train.py builds it: betas hard-coded there, eps PyTorch's default.
REFERENCE_ADAMW = {"betas": (0.9, 0.95), "eps": 1e-8, "amsgrad": False, "maximize": False}
# Our model's initialisation for the reference's init flags at their defaults (var.transformer.VAR.init_weights:
# std sqrt(1/(3C)) when ini < 0, head scaled by 0.02, AdaLN weights by 0.5).
_INIT_DEFAULTS = {"ini": -1.0, "hd": 0.02, "aln": 0.5}

# Flags that are not training-recipe settings, and why they are not mapped here.
MODEL_FLAGS = ("depth", "saln", "anorm", "pn", "patch_nums", "patch_size", "resos")   # configs_from_reference
DATA_FLAGS = ("data_load_reso", "data_path", "data_name", "mid_reso", "hflip", "workers")  # the data stage
SPEED_FLAGS = ("fuse", "tfast", "vfast", "afuse", "tf32", "device")   # kernels / compile: float rounding only
RUN_FLAGS = ("exp_name", "local_out_dir_path", "tb_log_dir_path", "log_txt_path", "last_ckpt_path", "cmd",
             "branch", "commit_id", "commit_msg", "local_debug", "dbg_nan", "same_seed_for_all_ranks")
MAPPED_FLAGS = ("bs", "batch_size", "glb_batch_size", "ep", "tblr", "tlr", "twd", "twde", "tclip", "ls", "wp", "wp0",
                "wpe", "sche", "opt", "fp16", "ac", "pg", "pg0", "pgwp", "ini", "hd", "aln", "alng", "seed")


def train_config_from_reference(args: Mapping[str, Any], *, adamw: Mapping[str, Any] | None = None,
                                weights_given: bool = False, **overrides) -> TrainConfig:
    """TrainConfig of a reference run from its flags (raw command-line values or the values after the reference's
    own derivations; missing flags take REFERENCE_TRAIN_DEFAULTS).

    adamw: the optimizer's keyword arguments if they differ from REFERENCE_ADAMW (betas, eps, amsgrad, maximize).
    weights_given: the run starts from given weights, so the initialisation flags (ini, hd, aln, alng) do not
    matter; otherwise they must be ours (alng becomes init_adaln_gamma). overrides: TrainConfig fields that are
    not recipe settings (micro_batch_size, log_every_steps, ...); a recipe field here raises.
    """
    unknown = sorted(set(args) - set(MAPPED_FLAGS) - set(MODEL_FLAGS) - set(DATA_FLAGS) - set(SPEED_FLAGS)
                     - set(RUN_FLAGS))
    if unknown:
        raise ValueError(f"reference flag(s) {unknown} have no mapping onto TrainConfig")
    a = {**REFERENCE_TRAIN_DEFAULTS, **{k: v for k, v in args.items() if v is not None}}

    def fail(flag: str, why: str):
        raise ValueError(f"reference flag {flag}={a.get(flag)!r}: {why}")

    if a["ac"] != 1:
        fail("ac", "gradient accumulation with the reference's lr scaling (tlr = ac * tblr * bs / 256) is not "
                   "implemented (TrainConfig.micro_batch_size splits a batch without changing the lr)")
    if a["pg"] != 0:
        fail("pg", "progressive training (growing the number of scales, its own loss weights) is not implemented")
    if a["opt"] != "adamw":
        fail("opt", "only AdamW is implemented")
    if a.get("hflip"):
        fail("hflip", "no flip augmentation in our data stage")
    precision = {0: "fp32", 2: "bf16"}.get(a["fp16"])
    if precision is None:
        fail("fp16", "fp16 autocast with a loss scaler is not implemented (fp16 0: float32, 2: bf16)")
    # The global batch: the reference derives bs = glb_batch_size = per-GPU batch_size * world size.
    batch = a.get("glb_batch_size") or a["bs"]
    if a["bs"] != batch:
        fail("bs", f"differs from glb_batch_size={batch}")
    peak_lr = a["tblr"] * batch / 256   # = our peak_lr_for; the reference multiplies by ac too (1 here)
    if a.get("tlr") is not None and abs(a["tlr"] - peak_lr) > 1e-12 * peak_lr:
        fail("tlr", f"is not tblr * bs / 256 = {peak_lr!r}")
    sched = a["sche"]
    if sched not in SCHEDULES:     # 'lin<T>' is what progressive training selects
        fail("sche", f"not one of our schedules {SCHEDULES}")
    if not weights_given:
        for flag, ours in _INIT_DEFAULTS.items():
            if a[flag] != ours:
                fail(flag, f"our initialisation uses {ours}; only init_adaln_gamma (alng) is a TrainConfig setting "
                           f"(pass weights_given=True when the initial weights are loaded)")
    opt = {**REFERENCE_ADAMW, **(adamw or {})}
    for flag in ("amsgrad", "maximize"):
        if opt[flag]:
            raise ValueError(f"reference AdamW {flag}=True is not implemented")
    fields = {
        "batch_size": int(batch),
        "epochs": int(a["ep"]),
        "base_lr_per_256": float(a["tblr"]),
        # The reference sets wp = ep / 50 when the flag is 0; the derived value is taken over as it is.
        "warmup_epochs": float(a["wp"]) if a["wp"] > 0 else a["ep"] * 1 / 50,
        "warmup_start_ratio": float(a["wp0"]),
        "final_lr_ratio": float(a["wpe"]),
        "schedule": sched,
        "weight_decay": float(a["twd"]),
        "weight_decay_end": float(a["twde"] or a["twd"]),     # the reference: twde = twde or twd
        "betas": tuple(float(b) for b in opt["betas"]),
        "eps": float(opt["eps"]),
        "grad_clip": float(a["tclip"]) if a["tclip"] > 0 else 0.0,   # <= 0: no clipping, in both
        "label_smoothing": float(a["ls"]),
        "precision": precision,
    }
    if a["seed"] is not None:
        fields["seed"] = int(a["seed"])
    if not weights_given:
        fields["init_adaln_gamma"] = float(a["alng"])
    clash = sorted(set(overrides) & (set(fields) | {"max_steps"}))
    if clash:
        raise ValueError(f"overrides {clash} are recipe settings; they come from the reference flags")
    return TrainConfig(**fields, **overrides)
