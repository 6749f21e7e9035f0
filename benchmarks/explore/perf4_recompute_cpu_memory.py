"""Where activation recompute frees memory, on CPU (resident-set peaks, /proc/self/status VmHWM reset between the
forward and the backward; glibc keeps freed memory, so read the numbers relative to each other).

A 6-block, width-512 VAR at 680 tokens, batch 8, fp32. Modes: eager, compile (compile_scope 'step': forward + loss in
one graph), block (compile_scope 'block'); the second argument is recompute_blocks. Prints what the forward keeps
and the backward's peak. Second of two iterations (the first compiles).

    for a in "eager 0" "eager 3" "compile 0" "compile 3" "compile 6" "block 0" "block 3" "block 6"; do
        PYTHONPATH=. python benchmarks/explore/perf4_recompute_cpu_memory.py $a; done
"""
import torch, sys, time, gc
from var.config import VARConfig
from var.transformer import VAR
from var.train import make_loss_fn, TrainConfig
torch.set_num_threads(2)
def hwm():
    for l in open('/proc/self/status'):
        if l.startswith('VmHWM'): return int(l.split()[1])/1024
def rss():
    for l in open('/proc/self/status'):
        if l.startswith('VmRSS'): return int(l.split()[1])/1024
def reset():
    open('/proc/self/clear_refs','w').write('5')
cfg = VARConfig(depth=6, embed_dim_override=512, num_heads_override=8, vocab_size=512, num_classes=10)
torch.manual_seed(0)
m = VAR(cfg).train()
B=8; L=cfg.seq_len
x=torch.randn(B,L-1,cfg.z_channels); lab=torch.randint(0,10,(B,)); tgt=torch.randint(0,512,(B,L))
mode, rb = sys.argv[1], int(sys.argv[2])
fn = make_loss_fn(TrainConfig(compile=(mode!="eager"), compile_scope="block" if mode=="block" else "step", recompute_blocks=rb))
for it in range(2):
    gc.collect(); base=rss(); reset()
    loss = fn(m, lab, x, tgt, None, 0.0, False)
    fwd_live = rss()-base; fwd_peak=hwm()-base
    reset()
    loss.backward()
    bwd_peak=hwm()-base
    m.zero_grad(set_to_none=True); del loss
print(mode, rb, f"after fwd live {fwd_live:.0f} MB, fwd peak {fwd_peak:.0f}, bwd peak {bwd_peak:.0f} MB")
