"""Stage `score`: FID, IS, precision and recall of generated samples against a real split.

The same command scores the "validation data" row of Table 1 (real val images as the samples, train as the
reference). The feature extractor is `score.extractor`: the offline evalnet, or Inception (local weights file).
`score.cleanfid_crosscheck: true` adds clean-fid's legacy_tensorflow FID as a separately labelled cross-check.
With the evalnet it also reports how often the samples are classified as their conditioning class.
"""
from __future__ import annotations

from eval.cleanfid_check import FID_KEY as CLEANFID_KEY
from eval.cleanfid_check import REL_DIFF_KEY as CLEANFID_REL_DIFF_KEY
from eval.evalnet import accuracy, load_evalnet
from eval.features import EVALNET, INCEPTION
from eval.score import score
from pipeline.common import load_stage_params, provenance, run_stage, select_device, stage_parser
from var.io import atomic_write_json, load_npz

EXTRACTORS = {"evalnet": EVALNET, "inception": INCEPTION}


def main(args, log) -> dict:
    p = load_stage_params(args)
    sc = p.score
    device = select_device(args.device if args.device != "auto" else sc.device)
    if sc.extractor == "evalnet" and not args.evalnet:
        raise ValueError("score.extractor is evalnet: --evalnet (the evaluation network) is required")
    weights = args.evalnet if sc.extractor == "evalnet" else sc.inception_weights
    pin = sc.inception_weights_sha256 if sc.extractor == "inception" else ""
    short = sc.extractor

    # The optional clean-fid cross-check: its own keys (fid_cleanfid_legacy_tf, ..._rel_diff) beside fid_inception.
    crosscheck = ({"cleanfid_weights": sc.cleanfid_weights, "cleanfid_sha256": sc.cleanfid_weights_sha256 or None}
                  if sc.cleanfid_crosscheck else {})

    def score_file(path) -> dict:
        out = score(path, args.real, extractor=EXTRACTORS[sc.extractor], device=device, weights_path=weights,
                    expected_sha256=pin or None, batch_size=sc.batch_size, k=sc.nearest_k, **crosscheck)
        samples = load_npz(path)
        if args.evalnet and "images" in samples and "labels" in samples:
            # conditioning accuracy: the evalnet's top-1 agreement with the class each sample was drawn for
            net = load_evalnet(args.evalnet, map_location=str(device))
            out["class_acc_evalnet"] = accuracy(net, samples["images"], samples["labels"], str(device))
        return out

    result = score_file(args.samples)
    if args.untrained:
        # The same architecture at its initial weights, sampled alike: how much training changed the scores.
        base = score_file(args.untrained)
        result["untrained"] = base
        result[f"fid_{short}_untrained"] = base[f"fid_{short}"]
        result[f"fid_{short}_ratio_trained_to_untrained"] = result[f"fid_{short}"] / base[f"fid_{short}"]
        if "class_acc_evalnet" in base:
            result["class_acc_evalnet_untrained"] = base["class_acc_evalnet"]
    result = {"name": args.name, "samples": args.samples, "reference": args.real, **result,
              "provenance": provenance(args, p)}
    atomic_write_json(args.scores, result)
    keys = (f"fid_{short}", f"is_{short}", f"precision_{short}", f"recall_{short}", "class_acc_evalnet",
            f"fid_{short}_untrained", "class_acc_evalnet_untrained", CLEANFID_KEY, CLEANFID_REL_DIFF_KEY)
    return {"name": args.name, **{k: result[k] for k in keys if k in result}}


def cli(argv=None):
    ap = stage_parser("score", __doc__)
    ap.add_argument("--name", required=True, help="row name (model name or 'valdata')")
    ap.add_argument("--samples", required=True, help="input: generated (or real val) images .npz")
    ap.add_argument("--real", required=True, help="input: the real side: a split file, or the reference batch (.npz)")
    ap.add_argument("--evalnet", default="", help="input (extractor evalnet): evalnet checkpoint, also for class accuracy")
    ap.add_argument("--untrained", default=None, help="input (optional): samples of the untrained model")
    ap.add_argument("--scores", required=True, help="output: scores JSON")
    run_stage("score", main, ap, argv)


if __name__ == "__main__":
    cli()
