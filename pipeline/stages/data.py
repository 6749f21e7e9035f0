"""Stage `data`: materialise the embedded `shapes` splits, or index an image folder (ImageNet layout).

Writes the train/val split files (`images` uint8 (N, H, W, 3) or `paths`, plus `labels` int64) and the class names.
"""
from __future__ import annotations

import numpy as np

from pipeline.common import load_stage_params, run_stage, stage_parser
from var import data as D
from var.io import atomic_write_json


def main(args, log) -> dict:
    p = load_stage_params(args)
    cfg = p.data
    splits = D.materialise(cfg)
    skipped = {}
    if cfg.kind == "imagefolder":      # decode every file now: a corrupt one fails here, not hours later
        for split, (paths, labels) in splits.items():
            paths, labels, bad = D.check_decodable(paths, labels, cfg.image_size, cfg.skip_corrupt)
            splits[split], skipped[split] = (paths, labels), len(bad)
            if bad:
                log.warning("%s: skipped %d undecodable image(s) of %d (data.skip_corrupt)", split, len(bad),
                            len(bad) + len(paths))
    for split, out in (("train", args.train), ("val", args.val)):
        arr, labels = splits[split]
        if isinstance(arr, np.ndarray):
            D.write_split(out, arr, labels)
        else:
            D.write_index(out, arr, labels)
        log.info("%s: %d items -> %s", split, len(labels), out)
    names = D.class_names(cfg)
    atomic_write_json(args.classes, {"kind": cfg.kind, "num_classes": len(names), "classes": names,
                                     **({"skipped_corrupt": skipped} if skipped else {})})
    return {"kind": cfg.kind, "classes": len(names), "train": len(splits["train"][1]),
            "val": len(splits["val"][1]), "image_size": cfg.image_size,
            **({"skipped": sum(skipped.values())} if skipped else {})}


def cli(argv=None):
    ap = stage_parser("data", __doc__)
    ap.add_argument("--train", required=True, help="output: train split .npz")
    ap.add_argument("--val", required=True, help="output: val split .npz")
    ap.add_argument("--classes", required=True, help="output: classes.json")
    run_stage("data", main, ap, argv)


if __name__ == "__main__":
    cli()
