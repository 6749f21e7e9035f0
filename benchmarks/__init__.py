"""Speed and memory benchmarks. Each module runs from the repository root, prints a table and writes
benchmarks/results/<name>.json through `benchmarks.common.write_result` (docs/performance.md lists the commands and
the current numbers):

    python -m benchmarks.bench_generate      generation throughput, d16-d30 (engine modes, breakdown, kernels)
    python -m benchmarks.bench_vqvae         VQVAE decode / encode throughput and encode token agreement
    python -m benchmarks.bench_tokens        the tokens stage's strict-fp32 encoder: faster paths and their agreement
    python -m benchmarks.bench_train         training step throughput and peak memory (compile, recompute)
    python -m benchmarks.bench_e2e           50k samples generated and scored, as the sample and score stages do
    python -m benchmarks.bench_score         scoring 50k vs 10k, each metric timed
    python -m benchmarks.bench_ddp           DDP training and sharded sampling on 1 and N GPUs
    python -m benchmarks.bench_tokenizer_ddp the tokenizer stage under torchrun on 1 and N GPUs
    python -m benchmarks.bench_rehearsal     Table 1 from stand-in released weights through Snakemake (and DVC), per job
    python -m benchmarks.bench_metric_suite  KID, density/coverage, bootstrap intervals and FD-vs-N on the CPU
    python -m benchmarks.complexity          paper Appendix B: AR vs VAR generation cost as the token map grows
"""
