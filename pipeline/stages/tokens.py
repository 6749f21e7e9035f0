"""Stage `tokens`: encode the train/val splits into multi-scale token maps once, with the trained tokenizer.

Output `.npz` (docs/architecture.md): `idx_NL` (int16 if V <= 32767 else int32; scales concatenated coarsest
first, L = sum pn^2), `labels_N` int64, `patch_nums` int64.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.common import load_stage_params, progress_bar, run_stage, select_device, stage_parser
from var.checkpoint import load_matching_checkpoint
from var.data import ImageSplit
from var.io import atomic_savez
from var.precision import fp32_precision


@torch.no_grad()
def encode_split(vqvae, split_path, image_size: int, batch_size: int, device, skip_corrupt: bool,
                 desc: str) -> dict[str, np.ndarray]:
    ds = ImageSplit(split_path, image_size, skip_corrupt=skip_corrupt)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    V = vqvae.cfg.vocab_size
    dtype = np.int16 if V <= 32767 else np.int32
    chunks, labels = [], []
    # Strict IEEE float32 on every device: cuDNN's TF32 default changed 6% of a trained tokenizer's tokens
    # (var/precision.py), and the training data must not depend on the GPU it was encoded on.
    with progress_bar(desc, total=len(ds)) as update, fp32_precision(False):
        done = 0
        for img_B3HW, label_B in loader:
            idx_Bl = vqvae.img_to_idx(img_B3HW.to(device))
            chunks.append(torch.cat(idx_Bl, dim=1).cpu().numpy().astype(dtype))
            labels.append(label_B.numpy().astype(np.int64))
            done += len(label_B)
            update(done)
    return {"idx_NL": np.concatenate(chunks), "labels_N": np.concatenate(labels),
            "patch_nums": np.asarray(vqvae.cfg.patch_nums, np.int64)}


def main(args, log) -> dict:
    p = load_stage_params(args)
    device = select_device(args.device)
    vqvae, _ = load_matching_checkpoint(args.tokenizer, "vqvae", p.tokenizer.model, "tokenizer.model", device)
    vqvae.to(device).eval()
    out = {}
    for split, src, dst in (("train", args.train, args.train_tokens), ("val", args.val, args.val_tokens)):
        tok = encode_split(vqvae, src, p.data.image_size, args.batch_size, device, p.data.skip_corrupt,
                           f"tokens {split}")
        atomic_savez(dst, **tok)
        log.info("%s: %s tokens -> %s", split, tok["idx_NL"].shape, dst)
        out[split] = int(tok["idx_NL"].shape[0])
    return {"train": out["train"], "val": out["val"], "L": int(tok["idx_NL"].shape[1]),
            "vocab": vqvae.cfg.vocab_size}


def cli(argv=None):
    ap = stage_parser("tokens", __doc__)
    ap.add_argument("--tokenizer", required=True, help="input: tokenizer checkpoint")
    ap.add_argument("--train", required=True, help="input: train split")
    ap.add_argument("--val", required=True, help="input: val split")
    ap.add_argument("--train-tokens", required=True, help="output: train token file")
    ap.add_argument("--val-tokens", required=True, help="output: val token file")
    ap.add_argument("--batch-size", type=int, default=256, help="encoding batch (memory only)")
    run_stage("tokens", main, ap, argv)


if __name__ == "__main__":
    cli()
