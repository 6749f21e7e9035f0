"""Stage `evalnet`: train the small offline evaluation classifier on the train split (features + logits for
FID/IS/precision/recall where no Inception weights exist); reports its val accuracy."""
from __future__ import annotations

from eval.evalnet import save_evalnet, train_evalnet
from pipeline.common import load_stage_params, progress_bar, run_stage, select_device, stage_parser
from var.data import load_split_images
from var.io import atomic_write_json


def main(args, log) -> dict:
    p = load_stage_params(args)
    device = select_device(args.device)
    tr_x, tr_y = load_split_images(args.train, p.data.image_size)
    va_x, va_y = load_split_images(args.val, p.data.image_size)
    with progress_bar("train evalnet", total=p.evalnet.epochs) as update:
        net, metrics = train_evalnet(p.evalnet, tr_x, tr_y, va_x, va_y, device=str(device),
                                     progress=lambda ep, info: update(ep, info=info))
    save_evalnet(args.model, net, p.evalnet, metrics["num_classes"], metrics["image_size"], metrics)
    atomic_write_json(args.metrics, metrics)
    atomic_write_json(args.summary, {"val_accuracy": metrics["val_accuracy"],
                                     "train_accuracy": metrics.get("train_accuracy")})
    return {k: metrics[k] for k in ("val_accuracy", "train_accuracy", "steps") if k in metrics}


def cli(argv=None):
    ap = stage_parser("evalnet", __doc__)
    ap.add_argument("--train", required=True, help="input: train split")
    ap.add_argument("--val", required=True, help="input: val split")
    ap.add_argument("--model", required=True, help="output: evalnet checkpoint")
    ap.add_argument("--metrics", required=True, help="output: metrics JSON")
    ap.add_argument("--summary", required=True, help="output: DVC metrics (accuracies)")
    run_stage("evalnet", main, ap, argv)


if __name__ == "__main__":
    cli()
