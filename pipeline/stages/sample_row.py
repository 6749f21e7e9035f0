"""Stage `sample_row`: draw `sample.per_class` images per class for one Table 2/3 row with the row's own sampler
(`rows.<row>.sampler`: cfg and its schedule, top-k / top-p, more_smooth, rejection sampling), through the one
generation path of the `sample` stage (var/sharded_sampling.py: the same block seeds, the GenerationEngine when
`sample.fast` is set (VAR rows), the same uint8 rounding); AR rows draw with var.ar.sample_ar.

Writes the samples (`images` uint8 (n, H, W, 3), `labels`), a grid, and the inference cost: wall-clock per image
and the analytic transformer FLOPs per image (eval/complexity.py), which Table 3 reports relative to its row 1. A
rejection-sampled row ("-re") keeps only accepted images (n <= N) and records the acceptance rate, the candidates
drawn per kept image (its cost is per kept image) and the images dropped (`sampling`: the label every table shows).
"""
from __future__ import annotations

import time

import numpy as np

from eval.classifiers import rejection_classifier
from eval.complexity import generation_flops
from eval.row_tables import sampling_label
from pipeline.common import progress_bar, row_params, run_stage, stage_parser
from pipeline.rows import row_model_config
from var.checkpoint import load_matching_checkpoint
from var.distributed import all_reduce_sum, init_from_env
from var.engine import engine_for
from var.io import atomic_write_json, save_image_grid
from var.rejection import RejectionStats
from var.sharded_sampling import gather_to_file, generate, write_seed_repeats


def main(args, log) -> dict:
    row, p = row_params(args, args.row)
    sc, sp = p.sample, row.sampler
    world, device = init_from_env(args.device)
    want = row_model_config(row, p.tokenizer.model, p.data.num_classes)
    model, ckpt = load_matching_checkpoint(args.model, row.kind, want, f"rows.{args.row}", device)
    vqvae, _ = load_matching_checkpoint(args.tokenizer, "vqvae", p.tokenizer.model, "tokenizer.model", device)
    model.to(device).eval()
    vqvae.to(device).eval()
    # the engine is a VAR sampler; the raster AR baseline always samples token by token (var.ar.sample_ar)
    engine = engine_for(model, vqvae, fast=sc.fast, precision=sc.precision, compile=sc.compile) \
        if row.kind == "var" else None
    classify, classifier = None, ""
    if sp.rejection.enabled:
        classify, classifier = rejection_classifier(sp.rejection, args.classifier, device,
                                                    f"rows.{args.row}.sampler.rejection")
    labels_N = np.repeat(np.arange(model.cfg.num_classes, dtype=np.int64), sc.per_class)
    t_wall = time.perf_counter()
    with progress_bar(f"sample {args.row}", total=len(labels_N)) as update:
        g = generate(model, vqvae, labels_N, block_size=sc.batch_size, seed=sc.seed, world=world,
                     progress=update if world.is_main else None, engine=engine, rejection=sp.rejection,
                     classify=classify, **sp.kwargs())
    seconds, classifier_seconds = (float(x) for x in all_reduce_sum([g.seconds, g.classifier_seconds], device))
    stats = None
    if g.rejection is not None:
        stats = RejectionStats(*(int(x) for x in all_reduce_sum(
            [g.rejection.requested, g.rejection.drawn, g.rejection.accepted], device)))
    res = gather_to_file(g.images, labels_N, args.samples, sc.batch_size, world, keep=g.keep or None)
    if args.seed_samples:                # score.seeds > 1: the same labels under further seeds
        # A rejection row keeps a different number of images per seed, so its spread is not plain sampling's: it
        # is scored on its first seed (the file then names that seed alone; the ablation stages declare the file
        # whichever row runs).
        write_seed_repeats(model, vqvae, labels_N, args.seed_samples,
                           seeds=1 if sp.rejection.enabled else p.score.seeds, seed=sc.seed,
                           block_size=sc.batch_size, world=world, engine=engine, **sp.kwargs())
    if not world.is_main:
        return {}
    images_NHW3, kept_N = res
    if stats is not None and len(kept_N) < 2:
        raise RuntimeError(f"rows.{args.row}: rejection sampling kept {len(kept_N)} of {len(labels_N)} images (FID "
                           f"needs 2): lower sampler.rejection.threshold ({sp.rejection.threshold}) or raise "
                           f"max_candidates ({sp.rejection.max_candidates})")
    save_image_grid(args.grid, images_NHW3, kept_N)
    steps = model.cfg.seq_len if row.kind == "ar" else len(model.cfg.patch_nums)
    flops = generation_flops(model.cfg, cfg_batch=2)
    rejection = None if stats is None else {
        **stats.to_dict(), "threshold": sp.rejection.threshold, "max_candidates": sp.rejection.max_candidates,
        "classifier": classifier, "classifier_seconds": classifier_seconds}
    sampler = {"seed": sc.seed, **sp.kwargs()}
    info = {"row": args.row, "kind": row.kind, "num_images": int(len(kept_N)), "num_requested": int(len(labels_N)),
            "seconds": seconds, "seconds_per_image": seconds / len(kept_N), "batch_size": sc.batch_size,
            "device": str(device), "world_size": world.size, "wall_seconds": time.perf_counter() - t_wall,
            "train_step": int(ckpt.get("step", 0)), "steps": steps,
            # a rejection row pays for every candidate: its FLOPs are per kept image
            "flops_per_image": flops * (stats.candidates_per_image if stats else 1.0), "flops_per_candidate": flops,
            "top_k": sp.top_k, "top_p": sp.top_p, "cfg": sp.cfg, "sampler": sampler,
            "engine": {"fast": engine is not None, "precision": sc.precision if engine else "fp32",
                       "compile": sc.compile if engine else False},
            "sampling": sampling_label(sampler, rejection), "rejection": rejection}
    if stats is not None:   # flat numbers, for `dvc metrics` / compare_rows
        info.update(acceptance_rate=stats.acceptance_rate, candidates_per_image=stats.candidates_per_image,
                    images_dropped=stats.dropped)
    atomic_write_json(args.metrics, info)
    out = {"row": args.row, "images": len(kept_N), "s_per_img": info["seconds_per_image"],
           "GFLOP_per_img": info["flops_per_image"] / 1e9}
    if stats is not None:
        out.update(acceptance=round(stats.acceptance_rate, 4), dropped=stats.dropped)
    return out


def cli(argv=None):
    ap = stage_parser("sample_row", __doc__)
    ap.add_argument("--row", default="", help="key of `rows` in params (the DAG's {row}); none: params "
                                              "ablation.row (the experiment jobs)")
    ap.add_argument("--model", required=True, help="input: the row's model checkpoint (its own or model_from's)")
    ap.add_argument("--tokenizer", required=True, help="input: the row's tokenizer checkpoint")
    ap.add_argument("--ar-tokenizer", default="", help="input (experiments): the AR tokenizer, used for an AR row")
    ap.add_argument("--classifier", default="", help="input (rejection sampling with the evaluation network): "
                    "its model.pt")
    ap.add_argument("--samples", required=True, help="output: samples .npz")
    ap.add_argument("--grid", required=True, help="output: PNG grid")
    ap.add_argument("--metrics", required=True, help="output: generation cost JSON")
    ap.add_argument("--seed-samples", default="", help="output (score.seeds > 1): the images under further seeds "
                    "(a rejection row: its first seed only)")
    run_stage("sample_row", main, ap, argv)


if __name__ == "__main__":
    cli()
