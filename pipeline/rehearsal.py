"""Stand-in release files for a full rehearsal of Table 1 from released weights, with no download: the DAG of
configs/imagenet256_released.yaml runs end to end, at 50,000 samples, on files with exactly the released formats.

    python -m pipeline.rehearsal --out weights/rehearsal [--models var-d16] [--reference-images 10000]
    snakemake --cores all table1 --configfile configs/imagenet256.yaml configs/imagenet256_released.yaml \
        weights/rehearsal/rehearsal.yaml

It writes, under --out:
- `vae_ch160v4096z32.pth` and `var_d16.pth` (...): bare state dicts with exactly the released key sets, shapes and
  dtypes (checked against the release manifests in tests/data/manifest_*.json), random weights;
- `weights-inception-standin.pth`: torch-fidelity's Inception layout with random weights (pinned by its sha256, as
  its file name cannot carry the official 6726825d prefix);
- `VIRTUAL_imagenet256_standin.npz`: a reference batch in the ADM format: `arr_0` (N, 256, 256, 3) uint8 smooth
  random images and `mu`, `sigma` (pool3) and `mu_s`, `sigma_s` (mixed_6/conv, 7 channels) computed from them with the
  stand-in Inception, so the stored statistics agree with the images as in the real batch;
- `rehearsal.yaml`: the override naming these files and their sha256 pins (run name `rehearsal`, table1 models).
Scores of random weights mean nothing: the rehearsal measures that the plan runs, how long each stage takes, and
that the guard, pins and provenance work on real-size inputs.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
RELEASE = {"vqvae": ("vae_ch160v4096z32.pth", "manifest_vae_ch160v4096z32.json"),
           "var-d16": ("var_d16.pth", "manifest_var_d16.json"), "var-d20": ("var_d20.pth", "manifest_var_d20.json"),
           "var-d24": ("var_d24.pth", "manifest_var_d24.json"), "var-d30": ("var_d30.pth", "manifest_var_d30.json")}


def check_against_manifest(state: dict, manifest: Path) -> None:
    """The stand-in must have the release's exact keys, shapes and dtypes (the manifest of the released file)."""
    man = json.loads(manifest.read_text())
    want = {e["key"]: (tuple(e["shape"]), e["dtype"]) for e in man["entries"]}
    if set(want) != set(state):
        raise ValueError(f"stand-in keys differ from {manifest.name}: missing {sorted(set(want) - set(state))[:5]}, "
                         f"unexpected {sorted(set(state) - set(want))[:5]}")
    bad = [k for k, (shape, dtype) in want.items()
           if tuple(state[k].shape) != shape or str(state[k].dtype).removeprefix("torch.") != dtype]
    if bad:
        raise ValueError(f"stand-in shapes or dtypes differ from {manifest.name} at {bad[:5]}")


def write_release_standins(out: Path, models: list[str], seed: int) -> dict[str, Path]:
    from var.config import VAR_PRESETS, VQVAE_PRESETS
    from var.io import atomic_torch_save
    from var.transformer import VAR
    from var.vqvae import VQVAE
    written = {}
    for name in ["vqvae", *models]:
        torch.manual_seed(seed)
        model = VQVAE(VQVAE_PRESETS["vqvae-ch160v4096z32"]) if name == "vqvae" else VAR(VAR_PRESETS[name])
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        file, manifest = RELEASE[name]
        check_against_manifest(state, REPO / "tests" / "data" / manifest)
        atomic_torch_save(out / file, state)         # the release saves a bare state dict
        written[name] = out / file
    return written


def write_reference_batch(out: Path, inception: Path, pin: str, n: int, device: str, seed: int) -> Path:
    from eval.features import INCEPTION, extract_features, load_extractor
    from eval.metrics import feature_stats
    from var.io import atomic_savez
    # Smooth random colour fields (bicubic from 8x8): image-like statistics, generated in seconds on a GPU.
    g = torch.Generator(device=device).manual_seed(seed)
    parts = []
    for s in range(0, n, 500):
        low = torch.randn(min(500, n - s), 3, 8, 8, device=device, generator=g)
        img = torch.nn.functional.interpolate(low, size=(256, 256), mode="bicubic").tanh().add(1).mul(127.5)
        parts.append(img.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    images = np.concatenate(parts)
    ext = load_extractor(INCEPTION, device=device, weights_path=inception, expected_sha256=pin)
    feats = extract_features(images, ext, batch_size=250)
    mu, sigma = feature_stats(feats["pool"])
    mu_s, sigma_s = feature_stats(feats["spatial"])
    path = out / "VIRTUAL_imagenet256_standin.npz"
    atomic_savez(path, arr_0=images, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.rehearsal", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="weights/rehearsal", help="folder for the stand-in files and the override")
    ap.add_argument("--models", nargs="+", default=["var-d16"], choices=[m for m in RELEASE if m != "vqvae"])
    ap.add_argument("--reference-images", type=int, default=10_000, help="images in the stand-in reference batch")
    ap.add_argument("--per-class", type=int, default=50, help="samples per class of the rehearsal (50: FID-50k)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from eval.inception import write_random_inception_weights
    from var.weights import sha256_file
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    weights = write_release_standins(out, args.models, args.seed)
    inception = out / "weights-inception-standin.pth"
    inception_sha = write_random_inception_weights(inception, seed=args.seed)
    ref = write_reference_batch(out, inception, inception_sha, args.reference_images, args.device, args.seed)
    override = {
        "run": {"name": "rehearsal"},
        "tokenizer": {"pretrained": str(weights["vqvae"]), "pretrained_sha256": sha256_file(weights["vqvae"])},
        "models": {m: {"pretrained": str(weights[m]), "pretrained_sha256": sha256_file(weights[m])}
                   for m in args.models},
        "table1": {"models": list(args.models)},
        "sample": {"per_class": args.per_class},
        "resources": {"gpus": 1, "stage_gpus": {"sample": 1}},
        # Table 1 only: the ImageNet rows of Tables 2/3 reuse models (model_from) the rehearsal does not import
        "rows": None, "table2": {"rows": []}, "table3": {"rows": []}, "ablation": {"row": ""},
        "score": {"inception_weights": str(inception), "inception_weights_sha256": inception_sha,
                  "reference_batch": str(ref)},
    }
    from var.io import atomic_write_text
    atomic_write_text(out / "rehearsal.yaml", "# Stand-in release files (python -m pipeline.rehearsal): random weights "
                      "in the released formats.\n" + yaml.safe_dump(override, sort_keys=False))
    print(f"wrote stand-ins for {', '.join(['vqvae', *args.models])}, the Inception weights and a reference batch of "
          f"{args.reference_images} images under {out} in {time.perf_counter() - t0:.0f} s; override: "
          f"{out / 'rehearsal.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
