"""eval/dinov2.py: the release's key set and shapes, refusal of wrong files, the forward against a functional
transcription written here, the position-embedding resize, and the dgm-eval preprocessing pinned by hand values."""
import hashlib
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

from eval.dinov2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VITL14,
    DINOv2Features,
    DinoV2ViT,
    ViTConfig,
    check_state_dict,
    expected_shapes,
    load_dinov2,
    preprocess,
)
from eval.inception import MissingWeightsError, WeightsHashError
from var.io import ArtifactError

SMALL = ViTConfig(dim=32, depth=2, heads=2, mlp_hidden=64)  # patch 14 and the 37 x 37 grid as the release


def _release_shapes():
    """Written from facebookresearch/dinov2 (vision_transformer.py `vit_large`, layers/*.py, hub/backbones.py),
    not from eval/dinov2.py."""
    s = {"cls_token": (1, 1, 1024), "pos_embed": (1, 1370, 1024), "mask_token": (1, 1024),
         "patch_embed.proj.weight": (1024, 3, 14, 14), "patch_embed.proj.bias": (1024,),
         "norm.weight": (1024,), "norm.bias": (1024,)}
    for i in range(24):
        b = f"blocks.{i}."
        s.update({b + "norm1.weight": (1024,), b + "norm1.bias": (1024,), b + "attn.qkv.weight": (3072, 1024),
                  b + "attn.qkv.bias": (3072,), b + "attn.proj.weight": (1024, 1024), b + "attn.proj.bias": (1024,),
                  b + "ls1.gamma": (1024,), b + "norm2.weight": (1024,), b + "norm2.bias": (1024,),
                  b + "mlp.fc1.weight": (4096, 1024), b + "mlp.fc1.bias": (4096,),
                  b + "mlp.fc2.weight": (1024, 4096), b + "mlp.fc2.bias": (1024,), b + "ls2.gamma": (1024,)})
    return s


def test_vitl14_keys_and_shapes_are_the_releases():
    want = _release_shapes()
    assert expected_shapes(VITL14) == want
    assert len(want) == 343 and sum(math.prod(v) for v in want.values()) == 304_368_640


def test_full_size_stand_in_state_dict_is_accepted_and_wrong_ones_refused_by_name():
    t0 = time.perf_counter()
    state = {k: torch.empty(v, device="meta") for k, v in _release_shapes().items()}  # no memory, no init
    check_state_dict(state, VITL14)
    assert time.perf_counter() - t0 < 5
    bad = dict(state)
    del bad["blocks.23.ls2.gamma"]
    bad["head.weight"] = torch.empty(1000, 1024, device="meta")
    bad["pos_embed"] = torch.empty(1, 257, 1024, device="meta")  # a 16 x 16 grid instead of the release's 37 x 37
    with pytest.raises(ValueError) as e:
        check_state_dict(bad, VITL14, "weights.pth")
    msg = str(e.value)
    assert "weights.pth" in msg and "blocks.23.ls2.gamma" in msg and "head.weight" in msg
    assert "pos_embed: (1, 257, 1024) (expected (1, 1370, 1024))" in msg


def _small_state(seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = DinoV2ViT(SMALL).state_dict()
    out = {}
    for k, v in shapes.items():
        if k.endswith("gamma"):
            out[k] = 0.5 + torch.rand(v.shape, generator=gen)
        elif "norm" in k and k.endswith("weight"):
            out[k] = 1 + 0.1 * torch.randn(v.shape, generator=gen)
        else:
            out[k] = 0.2 * torch.randn(v.shape, generator=gen)
    return out


def test_load_records_sha256_checks_it_and_refuses_bad_files(tmp_path):
    path = tmp_path / "dinov2_vitl14_pretrain.pth"
    torch.save(_small_state(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    model, got = load_dinov2(path, cfg=SMALL)
    assert got == digest and not model.training
    assert load_dinov2(path, digest.upper(), cfg=SMALL)[1] == digest
    with pytest.raises(WeightsHashError) as e:
        load_dinov2(path, "0" * 64, cfg=SMALL)
    assert str(path) in str(e.value) and digest in str(e.value) and "0" * 64 in str(e.value)
    with pytest.raises(ValueError, match="64-hex"):
        load_dinov2(path, digest[:8], cfg=SMALL)
    with pytest.raises(MissingWeightsError, match="dinov2_vitl14_pretrain.pth"):
        load_dinov2(tmp_path / "absent.pth", cfg=SMALL)
    pickled = tmp_path / "pickled.pth"
    torch.save({"net": Image.new("RGB", (2, 2))}, pickled)  # not tensors: weights_only refuses it
    with pytest.raises(ArtifactError, match="pickled.pth"):
        load_dinov2(pickled, cfg=SMALL)
    with pytest.raises(ValueError, match="missing keys"):  # the small file is not a ViT-L/14
        load_dinov2(path)


def _reference_forward(state, x, cfg):
    """DINOv2's eval forward written out with plain tensor ops (patches by reshape, attention by softmax)."""
    B, p, d, h = x.shape[0], cfg.patch_size, cfg.dim, cfg.heads
    g = x.shape[-1] // p
    patches = x.reshape(B, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, 3 * p * p)
    tok = patches @ state["patch_embed.proj.weight"].reshape(d, -1).T + state["patch_embed.proj.bias"]
    grid = state["pos_embed"][:, 1:].reshape(1, cfg.pos_grid, cfg.pos_grid, d).permute(0, 3, 1, 2)
    # the release resizes in float32 (`pos_embed.float()`) and casts back to the input's dtype
    grid = F.interpolate(grid.float(), scale_factor=((g + 0.1) / cfg.pos_grid,) * 2, mode="bicubic").double()
    pos = torch.cat([state["pos_embed"][:, :1].float().double(), grid.permute(0, 2, 3, 1).reshape(1, g * g, d)], 1)
    z = torch.cat([state["cls_token"].expand(B, 1, d), tok], 1) + pos

    def ln(t, pre):
        mu, var = t.mean(-1, keepdim=True), t.var(-1, unbiased=False, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-6) * state[pre + ".weight"] + state[pre + ".bias"]

    for i in range(cfg.depth):
        b = f"blocks.{i}."
        qkv = ln(z, b + "norm1") @ state[b + "attn.qkv.weight"].T + state[b + "attn.qkv.bias"]
        q, k, v = qkv.reshape(B, -1, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), -1)
        a = (att @ v).transpose(1, 2).reshape(B, -1, d) @ state[b + "attn.proj.weight"].T + state[b + "attn.proj.bias"]
        z = z + state[b + "ls1.gamma"] * a
        u = ln(z, b + "norm2") @ state[b + "mlp.fc1.weight"].T + state[b + "mlp.fc1.bias"]
        u = 0.5 * u * (1 + torch.erf(u / math.sqrt(2)))
        z = z + state[b + "ls2.gamma"] * (u @ state[b + "mlp.fc2.weight"].T + state[b + "mlp.fc2.bias"])
    return ln(z, "norm")[:, 0]


def test_forward_matches_functional_transcription_and_is_batch_independent():
    state = {k: v.double() for k, v in _small_state(1).items()}
    model = DinoV2ViT(SMALL).double().eval()
    model.load_state_dict(state)
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (3, 32)
        torch.testing.assert_close(out, _reference_forward(state, x, SMALL), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(model(x[1:2]), out[1:2], rtol=1e-10, atol=1e-10)
        # the release resolution needs no resize: 518 px = 37 x 37 patches use pos_embed as stored
        assert model.position_embedding(37, 37) is model.pos_embed


def _cubic_at(src: float) -> float:
    """Value at source coordinate `src` of the ramp f(k) = k resampled by torch's bicubic (Keys' cubic
    convolution with a = -0.75, taps floor(src) - 1 .. floor(src) + 2): sum_m W(t - m) * (floor(src) + m)."""
    def w(x, a=-0.75):
        x = abs(x)
        return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1 if x < 1 else a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
    base, t = math.floor(src), src - math.floor(src)
    return sum(w(t - m) * (base + m) for m in (-1, 0, 1, 2))


def test_position_embedding_resize_is_bicubic_with_the_releases_scale_offset():
    """pos_embed grid = the ramp 1.0 * row + 0.01 * col (cls entry -7). The release resizes it with
    F.interpolate(scale_factor=(16 + 0.1) / 37, mode='bicubic', antialias=False); with a scale factor (not a size)
    torch samples output row i at source row (i + 0.5) * 37 / 16.1 - 0.5. Expected values are computed here from
    the cubic-convolution formula at those coordinates (interior rows and columns, where all 4 taps are in the grid)."""
    model = DinoV2ViT(SMALL)
    r, c = torch.meshgrid(torch.arange(37.0), torch.arange(37.0), indexing="ij")
    ramp = (r + 0.01 * c).reshape(1, 37 * 37, 1).expand(1, -1, SMALL.dim)
    with torch.no_grad():
        model.pos_embed[:, 1:] = ramp
        model.pos_embed[:, 0] = -7.0
        pos = model.position_embedding(16, 16)[0, :, 0].double()
    assert pos.shape == (257,) and pos[0] == -7.0
    grid = pos[1:].reshape(16, 16)
    src = lambda i, n: (i + 0.5) * 37 / n - 0.5  # noqa: E731
    for i in range(1, 15):
        for j in (1, 7, 14):
            want = _cubic_at(src(i, 16.1)) + 0.01 * _cubic_at(src(j, 16.1))
            assert grid[i, j].item() == pytest.approx(want, abs=1e-4)  # float32 resize of values up to 37
    # sampling with the size 16 instead (the mutant) lands 0.12 rows away at i = 8: far outside the tolerance
    assert abs(_cubic_at(src(8, 16.1)) - _cubic_at(src(8, 16))) > 0.1


def _column_image():
    # 448 x 448 black with one white column (x = 224): PIL's 2x bicubic downscale spreads it over output columns
    img = np.zeros((448, 448, 3), dtype=np.uint8)
    img[:, 224] = 255
    return torch.from_numpy(img).permute(2, 0, 1)[None]


def _pinned(fn) -> bool:
    """Hand values. PIL bicubic (a = -0.5) with antialias at scale 2: output column i is centred at input 2i + 1,
    taps at distance x = (j + 0.5 - (2i + 1)) / 2 weigh k(x) = 1.5|x|^3 - 2.5|x|^2 + 1 (|x| < 1) or
    -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2 (1 <= |x| < 2): k(.25) = 0.8671875, k(.75) = 0.2265625, k(1.25) = -0.0703125,
    k(1.75) = -0.0234375, summing to 2 over the 8 taps. The white column j = 224 is at x = -0.25 from column 112
    -> 255 * 0.8671875 / 2 = 110.57 -> 111; at x = 0.75 from column 111 -> 255 * 0.2265625 / 2 = 28.89 -> 29;
    negative lobes clip to 0 (columns 110, 113). Then /255 and (v - mean) / std per channel."""
    out = fn(_column_image())
    if out.shape != (1, 3, 224, 224):
        return False
    for col, v in ((112, 111), (111, 29), (113, 0), (110, 0), (0, 0)):
        want = (torch.tensor(v / 255, dtype=torch.float32) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        if not torch.allclose(out[0, :, 100, col], want, rtol=0, atol=1e-6):
            return False
    return True


def test_preprocessing_pinned_by_hand_values_and_mutants_fail():
    assert _pinned(preprocess)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    norm = lambda x: (x - mean) / std  # noqa: E731

    def pil(img, mode):
        a = img[0].permute(1, 2, 0).numpy()
        return torch.from_numpy(np.array(Image.fromarray(a).resize((224, 224), mode))).permute(2, 0, 1)[None]

    mutants = {
        "bilinear": lambda img: norm(pil(img, Image.BILINEAR).float() / 255),
        "bicubic without antialias": lambda img: norm(
            F.interpolate(img.float(), size=(224, 224), mode="bicubic").round().clamp(0, 255) / 255),
        "no rounding to uint8": lambda img: norm(
            F.interpolate(img.float(), size=(224, 224), mode="bicubic", antialias=True) / 255),
        "[-1, 1] instead of ImageNet mean/std": lambda img: pil(img, Image.BICUBIC).float() / 127.5 - 1,
        "no /255": lambda img: norm(pil(img, Image.BICUBIC).float()),
        "resize to 256": lambda img: norm(torch.from_numpy(np.array(Image.fromarray(img[0].permute(1, 2, 0).numpy())
                                                                      .resize((256, 256), Image.BICUBIC)))
                                          .permute(2, 0, 1)[None].float() / 255),
    }
    failed = {name for name, fn in mutants.items() if not _pinned(fn)}
    assert failed == set(mutants)


def test_preprocessing_is_dgm_evals_torchvision_pipeline_bit_for_bit():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(2, 256, 256, 3), dtype=np.uint8)
    dgm = T.Compose([T.Resize((224, 224), T.InterpolationMode.BICUBIC), T.ToTensor(),
                     T.Normalize(np.array(IMAGENET_MEAN), np.array(IMAGENET_STD))])
    want = torch.stack([dgm(Image.fromarray(a)) for a in imgs])
    got = preprocess(torch.from_numpy(imgs).permute(0, 3, 1, 2))
    assert torch.equal(got, want.float())
    with pytest.raises(TypeError, match="uint8"):
        preprocess(torch.zeros(1, 3, 8, 8))


def _patch_grid_pinned(cfg: ViTConfig) -> bool:
    """16 x 16 tokens of 14 px: token (r, c) = W . pixels[14r:14r+14, 14c:14c+14] + b, computed by hand."""
    model = DinoV2ViT(cfg).double()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        tok = model.patch_embed(x)
    if tok.shape[1] != 256:
        return False
    w, b = model.patch_embed.proj.weight.reshape(cfg.dim, -1), model.patch_embed.proj.bias
    return all(torch.allclose(tok[0, r * 16 + c], w @ x[0, :, 14 * r:14 * r + 14, 14 * c:14 * c + 14].reshape(-1) + b)
               for r, c in ((0, 0), (3, 11), (15, 15)))


def test_patch_grid_is_16x16_of_14px_and_a_16px_patch_fails():
    assert _patch_grid_pinned(SMALL)
    assert not _patch_grid_pinned(ViTConfig(patch_size=16, dim=32, depth=1, heads=2, mlp_hidden=64))


def test_features_module_is_preprocess_then_cls(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(_small_state(4), path)
    feats = DINOv2Features(path, cfg=SMALL)
    assert feats.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    img = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 3, 64, 80), dtype=np.uint8))
    out = feats(img)
    assert set(out) == {"pool"} and out["pool"].shape == (2, 32) and out["pool"].dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(out["pool"], feats.net(preprocess(img)))
