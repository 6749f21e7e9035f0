"""Stage `zeroshot` (paper Fig. 8): in-painting, out-painting and class-conditional editing with a trained VAR,
zero-shot -- tokens outside the mask are the source image's at every scale, tokens inside are generated
(var/editing.py documents the mask rule).

DAG mode (`snakemake --cores all zeroshot`): the first val image of `zeroshot.num_images` classes, with the boxes
of params `zeroshot`, one figure per task (rows: source, mask (grey = generated), result) and a metrics JSON that
records how many outside tokens equal the source's (always all of them).

User mode, on your own image and mask (mask: any image, nonzero / white = generate; resized to the model's size):
    python -m pipeline.stages.zeroshot --model runs/default/var/var-d6/model.pt --tokenizer runs/default/tokenizer/model.pt \
        --image in.png --mask mask.png --label 3 --out out.png   (sampler: params `zeroshot.sampler`)
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.common import load_stage_params, run_stage, select_device, stage_parser
from var.checkpoint import load_model_checkpoint
from var.data import load_split_images
from var.editing import box_mask, edit_plan
from var.engine import engine_for
from var.images import to_uint8
from var.io import atomic_path, atomic_write_json
from var.sharded_sampling import generate


def save_rows(path, rows: list[np.ndarray], scale: int = 4) -> None:
    """rows: uint8 (B, H, W, 3) each -> one PNG, B columns, 2 px white gaps, nearest upscaling."""
    from PIL import Image
    B, H, W, _ = rows[0].shape
    g = 2
    canvas = np.full((len(rows) * (H + g) - g, B * (W + g) - g, 3), 255, np.uint8)
    for r, imgs in enumerate(rows):
        for b in range(B):
            canvas[r * (H + g):r * (H + g) + H, b * (W + g):b * (W + g) + W] = imgs[b]
    im = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)
    with atomic_path(path, suffix=".png") as tmp:
        im.save(tmp, format="PNG")


def shade(images_BHW3: np.ndarray, mask_BHW: np.ndarray) -> np.ndarray:
    out = images_BHW3.copy()
    out[mask_BHW] = 128
    return out


def run_task(var, vqvae, img_B3HW, mask_BHW, labels, zs, device, engine=None) -> tuple[np.ndarray, dict]:
    """One editing task as one block of the generation path: (uint8 results, token counts)."""
    tf, src, inside = edit_plan(vqvae, img_B3HW, mask_BHW.to(device), var.patch_nums)
    g = generate(var, vqvae, np.asarray(labels, np.int64), block_size=img_B3HW.shape[0], seed=zs.seed,
                 engine=engine, teacher_force=tf, keep_tokens=True, **zs.sampler.kwargs())
    idx = [t.to(device) for t in g.tokens[0]]
    kept = sum(int((idx[k] == src[k])[~inside[k]].sum()) for k in range(len(idx)))
    outside = sum(int((~inside[k]).sum()) for k in range(len(idx)))
    changed = sum(int((idx[k] != src[k])[inside[k]].sum()) for k in range(len(idx)))
    return g.images[0], {"outside_tokens": outside, "outside_equal_source": kept,
                           "inside_tokens": sum(int(m.sum()) for m in inside), "inside_changed": changed,
                           "inside_fraction_last_scale": float(inside[-1].float().mean())}


def main(args, log) -> dict:
    p = load_stage_params(args)
    zs = p.zeroshot
    device = select_device(args.device)
    vqvae, _ = load_model_checkpoint(args.tokenizer, kind="vqvae", map_location=device)
    vqvae.to(device).eval()
    if args.image:                                         # user mode
        if len(args.model) != 1 or not args.mask or not args.out:
            raise ValueError("user mode needs one --model, --mask and --out")
        var, _ = load_model_checkpoint(args.model[0], kind="var", map_location=device)
        from var.data import load_image
        size = p.tokenizer.model.image_size
        img = torch.from_numpy(load_image(args.image, size)).permute(2, 0, 1)[None].float().div(127.5).sub(1)
        mask = torch.from_numpy(load_image(args.mask, size).max(-1) > 127)[None]
        var.to(device).eval()
        engine = engine_for(var, vqvae, fast=p.sample.fast, precision=p.sample.precision, compile=p.sample.compile)
        res, m = run_task(var, vqvae, img.to(device), mask, [args.label], zs, device, engine)
        save_rows(args.out, [to_uint8(img.add(1).mul(0.5)), shade(to_uint8(img.add(1).mul(0.5)), mask.numpy()),
                             res])
        return {"image": args.image, **m}
    names = args.models or [f"model{i}" for i in range(len(args.model))]
    name = zs.model or names[-1]
    if name not in names:
        raise ValueError(f"zeroshot.model {name!r} is not among --models {names}")
    var, _ = load_model_checkpoint(args.model[names.index(name)], kind="var", map_location=device)
    var.to(device).eval()
    engine = engine_for(var, vqvae, fast=p.sample.fast, precision=p.sample.precision, compile=p.sample.compile)
    images, labels = load_split_images(args.val, p.tokenizer.model.image_size)
    K = var.num_classes
    pick = [int(np.flatnonzero(labels == c % K)[0]) for c in range(zs.num_images) if (labels == c % K).any()]
    src_u8, lab = images[pick], labels[pick]
    img = torch.from_numpy(src_u8).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
    B, H, W = img.shape[0], img.shape[2], img.shape[3]
    tasks = {"inpaint": (box_mask(B, H, W, zs.inpaint_box), lab.tolist()),
             "outpaint": (~box_mask(B, H, W, zs.outpaint_keep), lab.tolist()),
             "edit": (box_mask(B, H, W, zs.edit_box), ((lab + zs.edit_class_offset) % K).tolist())}
    metrics = {"model": name, "images": B, "source_labels": lab.tolist()}
    for task, (mask, task_labels) in tasks.items():
        res, m = run_task(var, vqvae, img, mask, task_labels, zs, device, engine)
        metrics[task] = {**m, "labels": task_labels}
        save_rows(getattr(args, task), [src_u8, shade(src_u8, mask.numpy()), res])
        if m["outside_equal_source"] != m["outside_tokens"]:
            raise RuntimeError(f"{task}: {m['outside_tokens'] - m['outside_equal_source']} outside tokens differ "
                               f"from the source")
    atomic_write_json(args.metrics, metrics)
    return {"model": name, "images": B, **{f"changed[{t}]": metrics[t]["inside_changed"] for t in tasks}}


def cli(argv=None):
    ap = stage_parser("zeroshot", __doc__)
    ap.add_argument("--model", nargs="+", required=True, help="input: VAR checkpoint(s) (DAG: one per --models)")
    ap.add_argument("--models", nargs="*", default=[], help="names of the --model checkpoints (DAG mode)")
    ap.add_argument("--tokenizer", required=True, help="input: tokenizer checkpoint")
    ap.add_argument("--val", help="input: val split (DAG mode)")
    for t in ("inpaint", "outpaint", "edit"):
        ap.add_argument(f"--{t}", help=f"output: {t} figure PNG (DAG mode)")
    ap.add_argument("--metrics", help="output: metrics JSON (DAG mode)")
    ap.add_argument("--image", help="user mode: source image")
    ap.add_argument("--mask", help="user mode: mask image (nonzero = generate)")
    ap.add_argument("--label", type=int, default=0, help="user mode: class to condition on")
    ap.add_argument("--out", help="user mode: output PNG (source, mask, result)")
    run_stage("zeroshot", main, ap, argv)


if __name__ == "__main__":
    cli()
