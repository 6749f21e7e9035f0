"""Stages `import_tokenizer` and `import_var` (`--kind`): released weights instead of training. The plan uses them
for `tokenizer.pretrained` / `models.<m>.pretrained` (configs/imagenet256_released.yaml): the file is loaded with
`weights_only=True` (var/weights.py: an optional full sha256 pin, `*_pretrained_sha256`), strictly into the architecture params give (an error names every missing, unexpected and
mis-shaped key), and written as the checkpoint the training stage would have written, with metrics that say where it
came from (path and sha256). Nothing else of the training stage's inputs (data, tokens) is needed.
"""
from __future__ import annotations

from pipeline.common import load_stage_params, run_stage, stage_parser
from var.checkpoint import load_official_state_dict, load_state_dict_strict, save_checkpoint
from var.io import atomic_write_json
from var.transformer import VAR
from var.vqvae import VQVAE
from var.weights import load_weights


def main(args, log) -> dict:
    p = load_stage_params(args)
    if args.kind == "vqvae":
        path, pin, model, what = (p.tokenizer.pretrained, p.tokenizer.pretrained_sha256, VQVAE(p.tokenizer.model),
                                  "tokenizer.pretrained")
    else:
        spec = p.model(args.model_name)
        path, pin, model, what = (spec.pretrained, spec.pretrained_sha256, VAR(spec.model),
                                  f"models.{args.model_name}.pretrained")
    if not path:
        raise ValueError(f"{what} is empty: nothing to import (the plan imports only configured weights)")
    # Tensors only (weights_only: a pickle payload is refused, never run), the pin checked on the bytes loaded.
    state, digest = load_weights(path, pin, key=what)
    if isinstance(state, dict) and state.get("kind") == args.kind and "model" in state:   # one of our checkpoints
        load_state_dict_strict(model, state["model"], str(path))
    else:
        load_official_state_dict(model, state)
    n_params = sum(q.numel() for q in model.parameters())
    metrics = {"num_params": n_params, "pretrained": str(path), "pretrained_sha256": digest, "step": 0}
    if args.kind == "var":
        metrics = {"model": args.model_name, **metrics}
    save_checkpoint(args.model, model, kind=args.kind, step=0, extra={"metrics": metrics})
    atomic_write_json(args.metrics, {**metrics, "history": []})
    if args.summary:
        atomic_write_json(args.summary, {"num_params": n_params, "imported": 1})
    log.info("imported %s (%.2fM parameters, sha256 %s) as %s", path, n_params / 1e6, digest[:16], args.model)
    return {"kind": args.kind, "params_M": n_params / 1e6, "sha256": digest[:16]}


def cli(argv=None):
    ap = stage_parser("import_weights", __doc__)
    ap.add_argument("--kind", required=True, choices=("vqvae", "var"), help="what the weights are")
    ap.add_argument("--model-name", default="", help="key of `models` in params (kind var)")
    ap.add_argument("--model", required=True, help="output: checkpoint")
    ap.add_argument("--metrics", required=True, help="output: metrics JSON (source path and sha256)")
    ap.add_argument("--summary", default="", help="output (tokenizer): DVC metrics")
    run_stage("import_weights", main, ap, argv)


if __name__ == "__main__":
    cli()
