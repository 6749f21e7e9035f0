"""Training recipes: the VAR / AR trainer (`TrainConfig`, var/train.py) and the tokenizer trainer
(`TokenizerTrainConfig`, var/tokenizer_train.py). Torch-free (see var/config/loader.py)."""
from __future__ import annotations

from dataclasses import dataclass

from ..schedule import SCHEDULES, peak_lr_for
from .loader import Config, check_sha256, param

NAN_POLICIES = ("raise", "skip")
PRECISIONS = ("fp32", "bf16")
SEED = dict(ge=0, lt=2 ** 63)           # any seed torch, numpy and python all accept


@dataclass(frozen=True)
class TrainConfig(Config):
    """VAR training hyperparameters (reference train.py defaults; params `models.<m>.train`, `row_train`, ...)."""
    batch_size: int = param(768, ge=1)                 # global batch (the reference's glb_bs), whatever the GPU count
    epochs: int = param(200, ge=1)
    max_steps: int = param(0, ge=0)                    # >0: the run (and its lr schedule) is this many steps
    base_lr_per_256: float = param(1e-4, gt=0, le=10)  # peak lr = base_lr_per_256 * batch_size / 256 (`tblr`)
    warmup_epochs: float = param(-1.0, ge=0, special=(-1.0,))  # -1: the reference's epochs / 50 (2% of the run)
    warmup_start_ratio: float = param(0.005, ge=0, le=1)    # warm-up starts at this fraction of peak lr (`wp0`)
    final_lr_ratio: float = param(0.01, ge=0, le=1)    # lr at the last step as a fraction of peak (`wpe`)
    schedule: str = param("lin0", choices=SCHEDULES)
    weight_decay: float = param(0.05, ge=0, le=10)
    weight_decay_end: float = param(-1.0, ge=0, le=10, special=(-1.0,))   # -1: = weight_decay (`twde or twd`)
    betas: tuple[float, float] = param((0.9, 0.95), ge=0, lt=1)
    eps: float = param(1e-8, gt=0, le=1)
    grad_clip: float = param(2.0, ge=0)                # 0: no clipping
    label_smoothing: float = param(0.0, ge=0, lt=1)
    seed: int = param(0, **SEED)
    ckpt_every_steps: int = param(1000, ge=1)          # state.pt is also written at every epoch end and at the end
    eval_every_epochs: int = param(1, ge=1)            # validation after every N epochs and after the last step
    eval_batch_size: int = param(0, ge=0)              # 0: = batch_size
    log_every_steps: int = param(50, ge=1)
    nan_policy: str = param("raise", choices=NAN_POLICIES)   # raise: stop naming the step; skip: drop the update
    precision: str = param("fp32", choices=PRECISIONS)  # bf16: autocast (CUDA only)
    micro_batch_size: int = param(0, ge=0)             # >0: the global batch in chunks of this many samples, spread
                                                       # over the GPUs and accumulated (results do not depend on
                                                       # the GPU count); 0: batch_size / GPUs per GPU
    shard_optimizer: bool = False                      # ZeRO-1 under torchrun: AdamW states sharded over the GPUs
    init_adaln_gamma: float = param(-1.0, ge=0, special=(-1.0,))   # -1: the model's default (1e-5); `alng`
    # Speed only (the same function; a run may resume with other values): torch.compile the forward + loss
    # (Inductor fuses the AdaLN / q-k norm / GELU chains and the cross entropy), and let its partitioner
    # recompute cheap activations in the backward to keep at most this fraction of them (1.0: its default).
    compile: bool = False
    # What one torch.compile graph covers: 'step' (forward + loss, the fastest) or 'block' (each transformer block
    # and the loss; recompute_blocks then frees memory as eager checkpointing does: the low-memory setting).
    compile_scope: str = param("step", choices=("step", "block"))
    activation_memory_budget: float = param(1.0, gt=0, le=1)
    # Speed/memory only, like the two above: activation checkpointing of the first `recompute_blocks` transformer
    # blocks (their forward is recomputed in the backward) and, with recompute_ffn, of every other block's FFN.
    recompute_blocks: int = param(0, ge=0)
    recompute_ffn: bool = False

    @property
    def peak_lr(self) -> float:
        return peak_lr_for(self.base_lr_per_256, self.batch_size)

    @property
    def wd_end(self) -> float:
        return self.weight_decay if self.weight_decay_end < 0 else self.weight_decay_end


@dataclass(frozen=True)
class TokenizerTrainConfig(Config):
    """Tokenizer training hyperparameters (params `tokenizer.train`; loss (5) of the paper, VQGAN's recipe)."""
    batch_size: int = param(32, ge=1)
    epochs: int = param(10, ge=1)
    max_steps: int = param(0, ge=0)                    # >0: train this many steps instead of `epochs`
    lr: float = param(1e-4, gt=0, le=10)
    warmup_steps: int = param(0, ge=0)                 # linear warm-up from 0 of the generator (and disc.) lr
    final_lr_ratio: float = param(1.0, ge=0, le=1)     # cosine decay after warm-up to this fraction of lr
    betas: tuple[float, float] = param((0.5, 0.9), ge=0, lt=1)   # VQGAN's Adam betas
    weight_decay: float = param(0.0, ge=0, le=10)      # AdamW, decoupled; 0 = plain Adam
    grad_clip: float = param(0.0, ge=0)                # 0: off
    lambda_rec: float = param(1.0, ge=0)               # pixel L2
    lambda_vq: float = param(1.0, ge=0)                # the quantizer's codebook + commitment loss
    lambda_p: float = param(0.0, ge=0)                 # perceptual; needs `perceptual=` passed to train_tokenizer
    perceptual: str = param("evalnet", choices=("evalnet", "lpips-vgg16"))   # backbone when lambda_p > 0
    perceptual_weights: tuple[str, ...] = ()           # lpips-vgg16: [vgg16-397923af.pth, LPIPS v0.1 vgg.pth]
    perceptual_weights_sha256: tuple[str, ...] = ()    # optional full sha256 of each file ('' = not pinned)
    init_from: str = ""                                # fine-tune from: released vae_ch160v4096z32.pth or a model.pt
    init_from_sha256: str = ""                         # optional full sha256 of init_from; the digest used is recorded
    autocast_bf16: bool = True                         # bf16 autocast on CUDA (the quantiser stays fp32)
    lambda_g: float = param(0.0, ge=0)                 # adversarial (hinge) generator loss; 0 = no discriminator
    disc_start_step: int = param(0, ge=0)
    disc_lr: float = param(0.0, ge=0, le=10)           # 0: = lr
    disc_ch: int = param(64, ge=1)                     # PatchGAN base width
    disc_layers: int = param(3, ge=1)                  # PatchGAN stride-2 layers (receptive field grows with it)
    adaptive_weight_max: float = param(1e4, gt=0)      # VQGAN clamps the adaptive weight to [0, 1e4]
    dead_code_restart: bool = False                    # re-seed never-hit codes with encoder features
    dead_code_every_steps: int = param(100, ge=1)
    seed: int = param(0, **SEED)
    ckpt_every_steps: int = param(1000, ge=1)
    eval_every_epochs: int = param(1, ge=1)
    eval_batch_size: int = param(0, ge=0)              # 0: = batch_size
    log_every_steps: int = param(50, ge=1)
    micro_batch_size: int = param(0, ge=0)             # >0: the global batch in chunks of this many images, spread
                                                       # over the GPUs and accumulated; 0: one chunk per rank

    def __post_init__(self):
        super().__post_init__()
        check_sha256(self.init_from_sha256, "init_from_sha256")
        for i, digest in enumerate(self.perceptual_weights_sha256):
            check_sha256(digest, f"perceptual_weights_sha256[{i}]")
        if self.perceptual_weights_sha256 and len(self.perceptual_weights_sha256) != len(self.perceptual_weights):
            raise ValueError(f"perceptual_weights_sha256 has {len(self.perceptual_weights_sha256)} entries for "
                             f"{len(self.perceptual_weights)} perceptual_weights files (one per file, '' = not pinned)")
