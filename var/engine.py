"""Fast generation and tokenisation on one device: the same functions as var.sampling / var.vqvae, faster.

Levers, each lossless:
  * low-precision weights stored once (a bf16 copy of the transformer and of the decoder; the quantiser and
    f_hat stay float32, so token maps are accumulated exactly as in the plain path);
  * AdaLN modulation computed once per image, a preallocated static KV cache (var.transformer);
  * one CUDA graph per scale step (the transformer blocks and the head), captured once per batch size;
  * on CUDA, fc1's bias + tanh-GELU in the cuBLASLt GEMM epilogue (var.blocks.FFN.fused_gelu);
  * channels-last low-precision VQVAE decode/encode in chunks (optionally GroupNorm with per-channel statistics);
  * the quantiser's bicubic upsampling as two small matmuls (var.quant.bicubic_matrix);
  * batches larger than fit in memory run in chunks, so any batch size runs.
Sampling itself (CFG, top-k/top-p, the draw) runs eagerly with the caller's generator, exactly as var.sampling.
"""
from __future__ import annotations

import copy

import torch

from .blocks import _with_compile_limit
from .sampling import EagerRunner, sample
from .transformer import VAR
from .vqvae import VQVAE, set_channel_stats


class GraphRunner:
    """A drop-in for sampling.EagerRunner that replays one captured CUDA graph per scale."""

    def __init__(self, var: VAR, batch2: int, block_fn=None, head_fn=None):
        self.var, self.B2 = var, batch2
        self.block_fn = block_fn or (lambda block, x, kv, pos, m: block(x, None, None, kv=kv, pos=pos, mods=m))
        self.head_fn = head_fn or (lambda var_, h, cond: var_.logits(h, cond))
        p = var.pos_1LC
        C = var.C
        self.cond = torch.zeros(batch2, C, device=p.device, dtype=p.dtype)
        self.mods = _static_mods(var, batch2)
        self.kv_cache = var.new_kv_cache(batch2)
        self.x_in, self.pos = [], []
        pos = 0
        for pn in var.patch_nums:
            self.x_in.append(torch.zeros(batch2, pn * pn, C, device=p.device, dtype=p.dtype))
            self.pos.append(pos)
            pos += pn * pn
        self.graphs, self.logits_out = None, None

    def _run(self, si: int) -> torch.Tensor:
        h = self.x_in[si]
        for block, m, kv in zip(self.var.blocks, self.mods, self.kv_cache):
            h = self.block_fn(block, h, kv, self.pos[si], m)
        return self.head_fn(self.var, h, self.cond)

    def _capture(self):
        pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):   # warm-up outside capture (cuBLAS/cuDNN workspaces, lazy inits)
            for si in range(len(self.x_in)):
                self._run(si)
        torch.cuda.current_stream().wait_stream(side)
        self.graphs, self.logits_out = [], []
        for si in range(len(self.x_in)):
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=pool):
                out = self._run(si)
            self.graphs.append(g)
            self.logits_out.append(out)

    def start(self, cond_BD: torch.Tensor):
        self.cond.copy_(cond_BD)
        for static, m in zip(self.mods, self.var.modulations(cond_BD)):
            if static is not None:
                for s, v in zip(static, m):
                    s.copy_(v.expand_as(s))
        if self.graphs is None:
            self._capture()

    def step(self, x_BlC: torch.Tensor, si: int, pos: int) -> torch.Tensor:
        assert pos == self.pos[si]
        self.x_in[si].copy_(x_BlC)
        self.graphs[si].replay()
        return self.logits_out[si]


def _static_mods(var: VAR, batch2: int) -> list:
    """Per block, six contiguous (batch2, 1, C) buffers for the AdaLN modulation (None where AdaLN is off): the
    compiled block is guarded on their layout, so the priming and the runners use the same kind."""
    p = var.pos_1LC
    return [[torch.zeros(batch2, 1, var.C, device=p.device, dtype=p.dtype) for _ in range(6)] if b.adaln else None
            for b in var.blocks]


@torch.no_grad()
def prime_compiled(var: VAR, block_fn, head_fn, batch2: int) -> list[tuple[int, int]]:
    """Call the compiled block and head once per scale, largest scale first, on zeros at batch2 rows (one block, a
    scratch KV cache of one block). Returns the (rows, tokens) of the calls, in order.

    Why: each Inductor Triton kernel with several candidate launch configurations benchmarks them at its first launch
    and keeps the winner for every later shape (torch/_inductor/runtime/triton_heuristics.py,
    CachingAutotuner.run -> autotune_to_one_config). The block graphs are compiled with dynamic shapes, so whichever
    call comes first decides the configuration of every scale at every batch size. Without this, that first call was
    the 4-token scale of whatever batch the caller began with (8 images in bench_generate's checks), where the
    timings are noise. Priming at the largest shapes makes the benchmark that decides see real work.
    Measured (benchmarks/explore/perf5_prime_order.py, one H200, 4 fresh-cache processes each): the same speed as
    without (d16 batch-256 transformer steps 0.344-0.349 s against 0.341-0.350 s; none of the 8 processes
    reproduced the slow machine's 0.391 s, whose cause is still unknown) and 13 s less set-up (36 s against 49 s).
    """
    block = var.blocks[0]
    p = var.pos_1LC
    kv = var.new_kv_cache(batch2, num_blocks=1)[0]       # one block's: the priming runs block 0 only
    for buf in kv:
        buf.zero_()
    cond = torch.zeros(batch2, var.C, device=p.device, dtype=p.dtype)
    m = _static_mods(var, batch2)[0]
    starts = [bg for bg, _ in var.begin_ends]
    calls = []
    for si in sorted(range(len(var.patch_nums)), key=lambda i: -var.patch_nums[i]):
        x = torch.zeros(batch2, var.patch_nums[si] ** 2, var.C, device=p.device, dtype=p.dtype)
        head_fn(var, block_fn(block, x, kv, starts[si], m), cond)
        calls.append((batch2, x.shape[1]))
    return calls


class GenerationEngine:
    """generate(...) computes var.sampling.sample's function, with the levers listed in the module docstring.

    `max_batch` bounds the images per chunk (default: what keeps the KV cache within `kv_budget` of the
    device's memory); a batch is split into equal chunks that draw from the one generator in order, so results
    depend on the chunking but on nothing else. The pipeline fixes the batch size, hence the chunking.
    """

    def __init__(self, var: VAR, vqvae: VQVAE, *, dtype: torch.dtype = torch.bfloat16,
                 cuda_graphs: bool | None = None, max_batch: int | None = None, decode_batch: int = 64,
                 kv_budget: float = 0.3, compile: bool = False, channels_last: bool = False,
                 encode_dtype: torch.dtype | None = None, fused_gelu: bool = True,
                 gn_channel_stats: bool | None = None, prime_batch: int | None = 64):
        device = var.pos_1LC.device
        self.device, self.dtype = device, dtype
        self.var = copy.deepcopy(var).to(dtype).eval()    # a copy: the switches below never touch the caller's model
        for block in self.var.blocks:
            block.ffn.fused_gelu = fused_gelu
        self.vqvae = vqvae.eval()                                  # quantiser and f_hat stay float32
        self.quant = copy.deepcopy(vqvae.quantize).eval()
        self.quant.upsample_matmul = True
        # GroupNorm statistics per channel first (var.vqvae.GroupNorm.channel_stats): the same function, with a
        # reduction that suits the channels-last layout Inductor gives the compiled decoder/encoder (measured on an
        # H200, ch 160, batch 64, bf16 engine: decode 756 -> 892 img/s, its fp16 encode 1242 -> 1405). Default: on
        # when compiled (eagerly its extra kernels would not pay).
        gn_channel_stats = compile if gn_channel_stats is None else gn_channel_stats
        self.vq_lp = vqvae if dtype == torch.float32 and not gn_channel_stats else copy.deepcopy(vqvae).to(dtype)
        set_channel_stats(self.vq_lp, gn_channel_stats)
        # Measured on an H100 (benchmarks/profile_generate.py): eager bf16 decode runs faster in NCHW than in
        # channels-last, whose GroupNorm/SiLU fall back to slow strided kernels; under torch.compile see
        # benchmarks/bench_vqvae.py.
        self.channels_last = channels_last
        if self.channels_last:
            self.vq_lp = self.vq_lp.to(memory_format=torch.channels_last)
        self.vq_lp.eval()
        # The encoder may run in another precision than the decoder: token agreement with fp32 depends on the
        # mantissa (fp16: 10 bits, bf16: 7), the decoder's output does not need it. Default: fp16 beside a 16-bit
        # engine (measured on an H200, ch160 random weights: 99.75% token agreement vs bf16's 98.1%, same speed);
        # a chunk whose fp16 features are not finite (range overflow) is re-encoded in fp32. Agreement also
        # depends on the codebook: with one fitted by k-means it fell to 95-96% (a flipped near-tie changes the
        # residual of every finer scale; TF32 gave 96.6%), and a per-image fp32 fallback on near-ties would redo
        # 256 of 256 images (benchmarks/explore/perf6_encode_margins.py). On a ch160 tokenizer trained 756 steps it
        # is 92.5% (TF32 94.0%; rounding only the weights to fp16 already gives 94.8%), falling as training goes on
        # (benchmarks/explore/perf7_trained_encode_agreement.py). The tokens stage therefore encodes in strict fp32.
        if encode_dtype is None:
            encode_dtype = torch.float16 if dtype in (torch.bfloat16, torch.float16) else dtype
        self.encode_dtype = encode_dtype
        self.vq_enc = self.vq_lp if self.encode_dtype == dtype else \
            set_channel_stats(copy.deepcopy(vqvae).to(self.encode_dtype, memory_format=torch.channels_last
                                                      if channels_last else torch.contiguous_format).eval(),
                              gn_channel_stats)
        self.cuda_graphs = (device.type == "cuda") if cuda_graphs is None else cuda_graphs
        self.decode_batch = decode_batch
        if max_batch is None:
            cfg = var.cfg
            kv_per_image = 2 * 2 * cfg.depth * cfg.seq_len * cfg.embed_dim * torch.finfo(dtype).bits // 8  # CFG: 2 rows
            total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 8 << 30
            max_batch = max(1, int(kv_budget * total // kv_per_image))
        self.max_batch = max_batch
        self._runners: dict[int, GraphRunner] = {}
        # Compiled engines run prime_compiled once, before their first CUDA graphs, at max(first batch, prime_batch)
        # images (None: off, the first real call decides Inductor's launch configurations).
        self.prime_batch, self.primed = prime_batch, None
        self.block_fn = self.head_fn = None
        if compile:
            # One compiled graph serves every block and every scale (weights are inputs, lengths symbolic), so
            # compilation happens once; Inductor fuses the LayerNorm/AdaLN/L2-norm/residual element-wise chains.
            # A model needs ~3 graphs (scale length 1, the rest, the last scale filling the KV cache), and dynamo's
            # cache is per function, shared by every engine of the process: two models or switch settings exceed
            # its default limit of 8, after which it silently runs the blocks eagerly (measured on an H200: d30
            # after d16 ran eager). The engine's compiled calls therefore raise that limit while they compile.
            from .blocks import AdaLNSelfAttn
            fwd = _with_compile_limit(torch.compile(AdaLNSelfAttn.forward, dynamic=True))
            self.block_fn = lambda block, x, kv, pos, m: fwd(block, x, None, None, kv, pos, m)
            self.head_fn = _with_compile_limit(torch.compile(VAR.logits, dynamic=True))
            self.decoder_fn = _with_compile_limit(torch.compile(self.vq_lp.fhat_to_img, dynamic=False))
            self.encoder_fn = _with_compile_limit(torch.compile(self.vq_enc.encode_features, dynamic=False))
        else:
            self.decoder_fn, self.encoder_fn = self.vq_lp.fhat_to_img, self.vq_enc.encode_features

    def _lp(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        x = x.to(dtype or self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.no_grad()
    def decode(self, f_hat: torch.Tensor) -> torch.Tensor:
        """f_hat (B, Cvae, pn_K, pn_K) -> images in [-1, 1] float32, decoded in chunks."""
        return torch.cat([self.decoder_fn(self._lp(f)).float() for f in f_hat.split(self.decode_batch)])

    @torch.no_grad()
    def encode(self, img_B3HW: torch.Tensor) -> list[torch.Tensor]:
        """Images in [-1, 1] -> token maps; encoder in low precision, nearest-code search in float32."""
        chunks = []
        for x in img_B3HW.split(self.decode_batch):
            f = self.encoder_fn(self._lp(x, self.encode_dtype)).float()
            if self.encode_dtype == torch.float16 and not bool(torch.isfinite(f).all()):
                f = self.vqvae.encode_features(x.float())
            chunks.append(self.quant.f_to_idx(f))
        return [torch.cat(per_scale) for per_scale in zip(*chunks)]

    def _runner(self, B: int):
        if not self.cuda_graphs:
            return EagerRunner(self.var)
        if B not in self._runners:
            if self.block_fn is not None and self.prime_batch is not None and self.primed is None:
                self.primed = prime_compiled(self.var, self.block_fn, self.head_fn, 2 * max(B, self.prime_batch))
            while len(self._runners) >= 2:   # each runner holds a KV cache: keep the two most recent sizes
                self._runners.pop(next(iter(self._runners)))
            self._runners[B] = GraphRunner(self.var, 2 * B, self.block_fn, self.head_fn)
        return self._runners[B]

    @torch.no_grad()
    def teacher_forced_logits(self, label_B: torch.Tensor, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Conditional logits (B, L, V) of the fast per-scale path on given token maps (no sampling): checks that
        the KV-cached, graph-replayed computation equals the masked full-sequence forward."""
        B = label_B.shape[0]
        var = self.var
        runner = self._runner(B) if self.cuda_graphs else EagerRunner(var)
        cond_BD = var.class_emb(torch.cat((label_B, torch.full_like(label_B, var.num_classes))))
        runner.start(cond_BD)
        lvl_pos_1LC = var.lvl_embed(var.lvl_1L) + var.pos_1LC
        x_rest = var.word_embed(self.vqvae.idx_to_var_input(idx_list).to(var.pos_1LC.dtype)) \
            + lvl_pos_1LC[:, var.first_l:]
        x_all = torch.cat((cond_BD[:B, None] + var.pos_start + lvl_pos_1LC[:, :var.first_l], x_rest), dim=1)
        out = []
        for si, (bg, ed) in enumerate(var.begin_ends):
            out.append(runner.step(x_all[:, bg:ed].repeat(2, 1, 1), si, bg)[:B].clone())
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def generate(self, B: int, label_B=None, *, seed: int | None = None, cfg: float = 1.5, top_k: int = 0,
                 top_p: float = 0.0, more_smooth: bool = False, cfg_schedule: str = "linear",
                 generator: torch.Generator | None = None, teacher_force=None):
        """Returns (idx_Bl list over scales, images (B, 3, H, W) in [0, 1]), like var.sampling.sample (the same
        arguments; `teacher_force` is split with the chunks)."""
        if seed is not None:
            generator = generator or torch.Generator(device=self.device)
            generator.manual_seed(seed)
        if label_B is None:
            from .sampling import resolve_labels
            label_B = resolve_labels(self.var, B, None, generator, self.device)
        elif not isinstance(label_B, int):
            label_B = torch.as_tensor(label_B, device=self.device, dtype=torch.long).reshape(B)
        idx_chunks, img_chunks = [], []
        n_chunks = -(-B // self.max_batch)
        chunk = -(-B // n_chunks)   # equal chunks, so one set of CUDA graphs serves them all
        for start in range(0, B, chunk):
            b = min(chunk, B - start)
            labels = label_B if isinstance(label_B, int) else label_B[start:start + b]
            tf = None if teacher_force is None else tuple([t[start:start + b] for t in part] for part in teacher_force)
            idx, img = sample(self.var, self.vqvae, b, labels, cfg=cfg, top_k=top_k, top_p=top_p,
                              more_smooth=more_smooth, cfg_schedule=cfg_schedule, generator=generator,
                              runner=self._runner(b), decode=self.decode, quantizer=self.quant, teacher_force=tf)
            idx_chunks.append(idx)
            img_chunks.append(img)
        return [torch.cat(s) for s in zip(*idx_chunks)], torch.cat(img_chunks)


def engine_for(var: VAR, vqvae: VQVAE, *, fast: bool, precision: str = "fp32", compile: bool = False):
    """The GenerationEngine the `sample` settings ask for (`fast`, `precision`, `compile`), or None (plain sampler)."""
    if not fast:
        return None
    device = var.pos_1LC.device
    if precision == "bf16" and device.type != "cuda":
        raise ValueError(f"sample.precision bf16 needs a CUDA device (this stage runs on {device})")
    return GenerationEngine(var, vqvae, dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
                            compile=compile)
