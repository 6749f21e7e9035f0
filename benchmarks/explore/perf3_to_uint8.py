"""Host side of a 50k run (bench_e2e.py, 2026-12-01 on an H200: 157.4 s of generation, 129.6 s of it in the sampler):
the old uint8 conversion (strided .cpu(), numpy assignment into the sample array) against var.images.to_uint8
(HWC made on the device, one dense copy into the array). Same bytes; median of 5 per block of 250."""
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from var.images import to_uint8  # noqa: E402


def old(img, out):
    out[:] = (img.clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def new(img, out):
    to_uint8(img, out=out)


dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
img = torch.rand(250, 3, 256, 256, device=dev)
res = {}
for name, fn in (("old", old), ("new", new)):
    out = np.empty((250, 256, 256, 3), np.uint8)
    ts = []
    for _ in range(6):
        t0 = time.perf_counter()
        fn(img, out)
        torch.cuda.synchronize() if dev.type == "cuda" else None
        ts.append(time.perf_counter() - t0)
    res[name] = (statistics.median(ts[1:]), out.copy())
    print(f"{name}: {res[name][0] * 1e3:.1f} ms per block of 250 ({200 * res[name][0]:.1f} s per 50k)", flush=True)
print("identical bytes:", np.array_equal(res["old"][1], res["new"][1]))
