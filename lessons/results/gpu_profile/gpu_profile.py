"""Where does a CUDA training step's time go? Kernel count, GPU busy time, wall time per variant.

    python lessons/results/gpu_profile/gpu_profile.py      # on a CUDA machine (README.md here)

For the bench's small and large sizes: one `minimoe bench` training step (bf16 autocast, fused
AdamW) of the dense model and the hard-routed MoE on the grouped and the sorted path — wall
time per step (20 steps after 5 warm-ups, not interleaved: read the counts, take ratios from
`minimoe bench`), GPU time in kernels, kernels, kernel-launch calls and sync/memcpy calls per
step (torch.profiler over 5 steps).
"""
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile
from minimoe.bench import SIZES
from minimoe.bench_models import build_models, make_batch, train_step

if not torch.cuda.is_available():
    sys.exit("gpu_profile.py needs a CUDA device; on CPU use `minimoe bench` (no profile needed).")
dev = torch.device("cuda")
for size in ("small", "large"):
    cfg, b, s, t = SIZES[size]
    models = build_models(cfg, 3, dev)
    batch = make_batch(b, s, t, cfg.vocab_size, dev)
    for name in ("dense", "hard_grouped", "hard_sorted"):
        step = train_step(models[name], batch, dev)
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / 20 * 1e3
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step()
            torch.cuda.synchronize()
        events = prof.key_averages()
        kernels = sum(e.count for e in events if e.device_type.name == "CUDA") / 5
        gpu_ms = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) for e in events if e.device_type.name == "CUDA") / 5 / 1e3
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")) / 5
        syncs = sum(e.count for e in events if "Synchronize" in e.key or e.key == "cudaMemcpyAsync") / 5
        print(f"[{size}] {name:>13}: wall {wall:6.2f} ms/step, GPU kernels busy {gpu_ms:6.2f} ms "
              f"({100 * gpu_ms / wall:4.1f} %), {kernels:5.0f} kernels, {launches:5.0f} launch calls, "
              f"{syncs:4.0f} sync/memcpy calls")
