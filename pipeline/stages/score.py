"""Stage `score`: FID, IS, precision and recall of generated samples against a real split or the standard
evaluator's reference batch; with them KID, density/coverage, the FD sample-size curve and bootstrap intervals
(eval/metric_suite.py), every score as mean +- sd over `score.seeds` sampling seeds, and optionally a second
feature space (`score.extra_extractors: [dinov2]`: fd_dinov2, kid_dinov2, never "FID").

The evaluation guard (eval/guard.py) runs before any feature is computed: uint8 RGB images at the configured size,
a class-balanced histogram, no two identical sampler blocks, a reference batch with the evaluator's arrays. A score
is labelled FID-50k only for 50,000 samples, 50 per class (`evaluation_label`). scores.json records the environment
(package versions, GPU, precision and sampler settings, seeds, the samples' sha256) and the provenance.

The same command scores the "validation data" row of Table 1 (real val images as the samples, train as the
reference). `score.cleanfid_crosscheck: true` adds clean-fid's legacy_tensorflow FID as a separately labelled
cross-check. With the evalnet it also reports how often the samples are classified as their conditioning class.
"""
from __future__ import annotations

import json
import statistics
import time

import numpy as np

from eval import guard
from eval.bootstrap import BootstrapConfig
from eval.cleanfid_check import FID_KEY as CLEANFID_KEY
from eval.cleanfid_check import REL_DIFF_KEY as CLEANFID_REL_DIFF_KEY
from eval.evalnet import accuracy, load_evalnet
from eval.features import DINOV2, EVALNET, INCEPTION, load_extractor
from eval.metric_suite import SuiteConfig
from eval.score import score
from pipeline.common import load_stage_params, provenance, run_stage, select_device, stage_parser
from var.io import atomic_write_json, load_npz

EXTRACTORS = {"evalnet": EVALNET, "inception": INCEPTION}
# Per-seed numbers that are averaged (the bootstrap, KID, density / coverage and FD curve come from the first seed)
SEED_KEYS = ("fid", "sfid", "is", "precision", "recall", "class_acc")


def suite_config(sc) -> SuiteConfig | None:
    if not sc.bootstrap_resamples and not sc.fd_curve_points:
        return None
    return SuiteConfig(bootstrap=BootstrapConfig(resamples=max(sc.bootstrap_resamples, 1), level=sc.bootstrap_level),
                       bootstrap_metrics=sc.bootstrap_metrics if sc.bootstrap_resamples else (),
                       fd_num_points=max(sc.fd_curve_points, 2), pr_k=sc.nearest_k)


def seed_sets(args) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(source, images, labels) per sampling seed: the samples file, then the further seeds' images."""
    first = load_npz(args.samples)
    if "images" not in first:            # an image-folder split (the validation-data row): decoded while scoring
        return [(args.samples, args.samples, first.get("labels"))]
    sets = [(args.samples, first["images"], first.get("labels"))]
    if args.seed_samples:
        more = load_npz(args.seed_samples)
        for i in range(1, len(more)):
            if f"images_seed{i}" not in more:
                break
            sets.append((f"{args.seed_samples}:images_seed{i}", more[f"images_seed{i}"], first.get("labels")))
    return sets


def check(args, p, sets, sample_metrics: dict) -> str:
    """The evaluation guard over every seed's images; returns the FID label."""
    generated = args.name != "valdata"
    # a rejection-sampled row keeps only accepted images: its classes are unbalanced by design and its blocks are
    # shorter than the batch size (its tables label it "-re" with the images dropped)
    rejected = bool(sample_metrics.get("rejection"))
    for src, images, labels in sets:
        if not isinstance(images, np.ndarray):
            continue
        guard.check_images(images, p.data.image_size, src)
        if generated and labels is not None and not rejected:
            guard.check_class_balance(labels, int(labels.max()) + 1, src)
        if generated and sample_metrics.get("batch_size") and not rejected:
            guard.check_distinct_blocks(images, int(sample_metrics["batch_size"]), src)
    if p.score.reference_batch and args.real == p.score.reference_batch:     # the standard evaluator's batch
        guard.check_reference_batch(load_npz(args.real), args.real, p.score.extractor == "inception")
    images, labels = sets[0][1], sets[0][2]
    if labels is None:                   # unlabelled samples: the count alone (never the standard FID-50k)
        return f"FID-{len(images)}"
    return guard.fid_label(labels)


def aggregate(per_seed: list[dict]) -> dict:
    """mean (reported), sd (ddof 1) and the per-seed values of every averaged metric."""
    out = {"num_seeds": len(per_seed)}
    keys = [k for k in per_seed[0] if k.startswith(SEED_KEYS) and isinstance(per_seed[0][k], float)
            and "_ci_" not in k and "std" not in k and all(k in d for d in per_seed)]
    for k in keys:
        vals = [float(d[k]) for d in per_seed]
        out[k] = statistics.fmean(vals)
        if len(vals) > 1:
            out[f"{k}_sd"] = statistics.stdev(vals)
            out[f"{k}_per_seed"] = vals
    return out


def environment(sample_metrics: dict, device, sets) -> dict:
    import torch
    return {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "engine": sample_metrics.get("engine"), "sampler": sample_metrics.get("sampler"),
            "sample_batch_size": sample_metrics.get("batch_size"),
            "samples_sha256": {src: guard.sha256_of(src) for src, _, _ in sets if ":" not in src}}


def main(args, log) -> dict:
    p = load_stage_params(args)
    sc = p.score
    device = select_device(args.device if args.device != "auto" else sc.device)
    if sc.extractor == "evalnet" and not args.evalnet:
        raise ValueError("score.extractor is evalnet: --evalnet (the evaluation network) is required")
    sample_metrics = json.loads(open(args.sample_metrics).read()) if args.sample_metrics else {}
    t0 = time.perf_counter()
    sets = seed_sets(args)
    log.info("loaded %d sample set(s): %.1f s", len(sets), time.perf_counter() - t0)
    t0 = time.perf_counter()
    label = check(args, p, sets, sample_metrics)          # before any feature is computed
    log.info("evaluation guard (%s): %.1f s", label, time.perf_counter() - t0)

    weights = args.evalnet if sc.extractor == "evalnet" else sc.inception_weights
    pin = sc.inception_weights_sha256 if sc.extractor == "inception" else ""
    short = sc.extractor
    extractor = load_extractor(EXTRACTORS[sc.extractor], device=device, weights_path=weights,
                               expected_sha256=pin or None)
    extra = tuple(load_extractor(DINOV2, device=device, weights_path=sc.dinov2_weights,
                                 expected_sha256=sc.dinov2_weights_sha256 or None)
                  for name in sc.extra_extractors if name == "dinov2")
    # The optional clean-fid cross-check: its own keys (fid_cleanfid_legacy_tf, ..._rel_diff) beside fid_inception.
    crosscheck = ({"cleanfid_weights": sc.cleanfid_weights, "cleanfid_sha256": sc.cleanfid_weights_sha256 or None}
                  if sc.cleanfid_crosscheck else {})
    nets: list = []                      # the evaluation network, loaded for the first labelled set


    def score_images(images, labels, uncertainty: bool) -> dict:
        out = score(images, args.real, extractor=extractor, batch_size=sc.batch_size, k=sc.nearest_k,
                    uncertainty=suite_config(sc) if uncertainty else None, extra_extractors=extra if uncertainty
                    else (), **(crosscheck if uncertainty else {}))
        if args.evalnet and labels is not None and isinstance(images, np.ndarray):
            # conditioning accuracy: the evalnet's top-1 agreement with the class each sample was drawn for
            nets[:] = nets or [load_evalnet(args.evalnet, map_location=str(device))]
            out["class_acc_evalnet"] = accuracy(nets[0], images, labels, str(device))
        return out

    per_seed = [score_images(images, labels, i == 0) for i, (_, images, labels) in enumerate(sets)]
    result = {**per_seed[0], **aggregate(per_seed), "evaluation_label": label}
    if args.untrained:
        # The same architecture at its initial weights, sampled alike: how much training changed the scores.
        base_file = load_npz(args.untrained)
        base = score_images(base_file["images"], base_file.get("labels"), False)
        result["untrained"] = base
        result[f"fid_{short}_untrained"] = base[f"fid_{short}"]
        result[f"fid_{short}_ratio_trained_to_untrained"] = result[f"fid_{short}"] / base[f"fid_{short}"]
        if "class_acc_evalnet" in base:
            result["class_acc_evalnet_untrained"] = base["class_acc_evalnet"]
    t0 = time.perf_counter()
    env = environment(sample_metrics, device, sets)
    log.info("environment and samples sha256: %.1f s", time.perf_counter() - t0)
    result = {"name": args.name, "samples": args.samples, "reference": args.real, **result,
              "environment": env, "provenance": provenance(args, p)}
    atomic_write_json(args.scores, result)
    keys = (f"fid_{short}", f"fid_{short}_sd", f"is_{short}", f"precision_{short}", f"recall_{short}",
            f"kid_{short}", "class_acc_evalnet", f"fid_{short}_untrained", "class_acc_evalnet_untrained",
            CLEANFID_KEY, CLEANFID_REL_DIFF_KEY)
    return {"name": args.name, "label": label, **{k: result[k] for k in keys if k in result}}


def cli(argv=None):
    ap = stage_parser("score", __doc__)
    ap.add_argument("--name", required=True, help="row name (model name or 'valdata')")
    ap.add_argument("--samples", required=True, help="input: generated (or real val) images .npz")
    ap.add_argument("--seed-samples", default="", help="input (score.seeds > 1): the further seeds' images .npz")
    ap.add_argument("--sample-metrics", default="", help="input: the sampling job's metrics (block size, settings)")
    ap.add_argument("--real", required=True, help="input: the real side: a split file, or the reference batch (.npz)")
    ap.add_argument("--evalnet", default="", help="input (extractor evalnet): evalnet checkpoint, also for class accuracy")
    ap.add_argument("--untrained", default=None, help="input (optional): samples of the untrained model")
    ap.add_argument("--scores", required=True, help="output: scores JSON")
    run_stage("score", main, ap, argv)


if __name__ == "__main__":
    cli()
