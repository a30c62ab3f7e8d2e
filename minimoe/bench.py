"""`minimoe bench`: is task-level routing as cheap as the paper promises? Measured, side by side.

One process, one synthetic batch mixing 8 tasks, the `small` preset and a larger model:
- training step (forward, loss, backward, clipping, AdamW: one `train.fit` step) of the dense
  model (n_experts=1), the hard-routed MoE (straight-through Gumbel; rows grouped per expert —
  the default path of this device, and each of sorted / grouped GEMM / general forced),
  the soft-routed MoE (softmax: all experts run), a dense model `extract`ed from the MoE and
  `torch.nn.Transformer` of the same dimensions;
- eval forward of dense, extracted and routed models; greedy generation tokens/s of the routed
  model vs its extracted dense model (a one-task batch: extraction serves one task);
- 1 vs 2 threads (CPU); MFU = counted FLOPs/s (`minimoe/flops.py`) ÷ a timed matmul peak.

Timing: warm-up, then rounds in alternating order (ABC CBA …); times are medians over rounds,
ratios and MFU medians of per-round ratios (`flops.paired`), so load from other processes
cancels. Optimizer, precision and compile come from `minimoe/device.py`, as in training (CUDA:
bf16 autocast, fused AdamW, `--compile`); where its AdamW is not fused, a fused-AdamW row shows
what that would save. Timings are never asserted in tests.

Read next: `minimoe/bench_models.py` (the models and steps timed), `minimoe/flops.py` (what is
counted), `minimoe/distributed.py` (many processes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics

import torch
from torch import nn

from minimoe.bench_models import build_models, generate_step, infer_step, make_batch, token_ffn_step_ratio, train_step
from minimoe.config import ModelConfig
from minimoe.device import autocast_context, make_optimizer, maybe_compile, resolve_device
from minimoe.fastpool import FastExpertPool
from minimoe.errors import ConfigError, Parser
from minimoe.flops import describe_machine, matmul_op, paired, time_interleaved, train_flops
from minimoe.presets import PRESETS

SMALL = dataclasses.replace(PRESETS["small"].model, vocab_size=300)  # the suite's vocabulary is ~300
LARGE = dataclasses.replace(SMALL, d_model=128, d_ff=512, n_enc_layers=4, n_dec_layers=4)
TINY = dataclasses.replace(SMALL, vocab_size=40, d_model=16, n_heads=2, d_ff=32, n_enc_layers=1,
                          n_dec_layers=1)
# Compute-bound (`--size xl`, for a GPU): big enough that matmuls, not per-call overhead, set the
# step time, so hard_grouped_over_dense shows what the grouped GEMM path costs at scale.
XL = dataclasses.replace(SMALL, d_model=512, n_heads=8, d_ff=2048, n_enc_layers=6, n_dec_layers=6, max_len=160)
# name → (model config, batch b, source length s, target length t)
SIZES = {"small": (SMALL, 32, 32, 6), "large": (LARGE, 32, 32, 6)}
QUICK = {"small": (TINY, 8, 10, 4), "large": (dataclasses.replace(TINY, d_model=32, d_ff=64), 8, 10, 4)}
BY_SIZE = {"default": (SIZES, QUICK),  # --size → (sizes, their --quick stand-ins)
           "xl": ({"xl": (XL, 64, 128, 32)}, {"xl": (dataclasses.replace(TINY, n_enc_layers=2, n_dec_layers=2), 8, 12, 4)})}
GOALS = {"hard_over_dense": 1.10, "extracted_over_dense": 1.02, "dense_over_torch": 1.0, "mfu": 0.30}


def bench_size(cfg: ModelConfig, b: int, s: int, t: int, n_experts: int, device: torch.device,
               rounds: int, inner: int, peak_n: int, compile_models: bool) -> dict:
    """All timings of one model size (training steps, then eval-mode calls), summarized."""
    models = build_models(cfg, n_experts, device)
    batch = make_batch(b, s, t, cfg.vocab_size, device)
    fns = {name: train_step(model, batch, device) for name, model in models.items()}
    if not make_optimizer([torch.zeros(1, device=device)], device).defaults.get("fused"):
        # device.py's optimizer is the plain per-tensor loop here: also time the fused kernel
        # (one call for all parameters), whose saving grows with the m× parameters of an MoE.
        fns.update({f"{k}_fused_adamw": train_step(models[k], batch, device, "fused_adamw")
                    for k in ("dense", "hard")})
    # Forward + backward alone: splits each step into compute and the parameter update.
    fns.update({f"{k}_fwd_bwd": train_step(models[k], batch, device, "fwd_bwd") for k in ("dense", "hard")})
    if device.type == "cuda":  # what bf16 autocast + fused AdamW buy over fp32 + default AdamW
        fns["dense_plain_fp32"] = train_step(models["dense"], batch, device, "plain_fp32")
    if compile_models:
        fns.update({f"{k}_compiled": train_step(maybe_compile(models[k], True), batch, device)
                    for k in ("dense", "hard")})
    # The peak in the precision the models run in: bf16 under CUDA autocast, else fp32.
    fns["peak"] = matmul_op(peak_n, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    times = time_interleaved(fns, device, rounds, inner)
    for model in models.values():
        model.eval()
    one_task = dataclasses.replace(batch, task=torch.zeros_like(batch.task))  # extract serves one task
    evals = {f"infer_{k}": infer_step(models[k], batch, device) for k in ("dense", "extracted", "hard")}
    evals.update({f"generate_{k}": generate_step(models[k], one_task, t) for k in ("hard", "extracted")})
    times.update(time_interleaved(evals, device, rounds, inner))
    n_batch_tasks = int(batch.task.unique().numel())
    moe = dataclasses.replace(cfg, n_experts=n_experts)
    flops = {"dense": train_flops(cfg, b, s, t), "extracted": train_flops(cfg, b, s, t),
             "torch": train_flops(cfg, b, s, t),  # the same matmuls (fused q/k/v projections)
             **{k: train_flops(moe, b, s, t, 1, models["hard"].rcfg, n_batch_tasks)
                for k in models if k.startswith("hard")},  # every path: the same matmuls
             "soft": train_flops(moe, b, s, t, n_experts, models["soft"].rcfg, n_batch_tasks)}
    config = {**dataclasses.asdict(cfg), "batch": b, "src_len": s, "tgt_len": t,
              "n_tasks_in_batch": n_batch_tasks, "n_experts": n_experts}
    return summarize(times, flops, 2 * peak_n**3, config)


def summarize(times: dict[str, list[float]], flops: dict[str, int], peak_flops: int,
              config: dict) -> dict:
    """Medians (ms), throughputs, paired ratios and MFU from the per-round times of one size."""
    b, s, t = config["batch"], config["src_len"], config["tgt_len"]
    ms = {k: statistics.median(v) for k, v in times.items()}
    ratio = lambda a, b: paired(times, a, b)  # noqa: E731
    over_dense = {k: ratio(k, "infer_dense" if k.startswith("infer_") else "dense")
                  for k in times if k != "peak" and not k.startswith("generate_")}
    result = {
        "config": config, "ms": ms, "ms_rounds": times, "over_dense": over_dense,
        "peak_gflops": peak_flops / ms["peak"] / 1e6, "train_flops": flops,
        "tokens_per_s": {k: b * (s + t) / ms[k] * 1e3 for k in flops},
        "generate_tokens_per_s": {k: b * t / ms[f"generate_{k}"] * 1e3 for k in ("hard", "extracted")},
        "gflops_per_s": {k: f / ms[k] / 1e6 for k, f in flops.items()},
        # MFU per round = (flops / step time) / (peak flops / matmul time); then the median
        "mfu_by_variant": {k: f / peak_flops * ratio("peak", k) for k, f in flops.items()},
        "hard_over_dense": over_dense["hard"], "soft_over_dense": over_dense["soft"],
        "hard_general_over_dense": over_dense["hard_general"],  # without the sorted speed path
        "hard_sorted_over_dense": over_dense["hard_sorted"],
        "hard_grouped_over_dense": over_dense.get("hard_grouped"),  # None: no grouped kernel here
        "extracted_over_dense": over_dense["infer_extracted"],  # serving: eval forward
        "routed_generate_over_extracted": ratio("generate_hard", "generate_extracted"),
        "dense_over_torch": ratio("dense", "torch"),
    }
    # Where hard routing's extra time goes: fwd+bwd vs fwd+bwd, and the update (clip + AdamW over
    # m× the parameters) as a share of the dense step: full − fwd_bwd, per round.
    update = {k: statistics.median((full - part) / dense for full, part, dense in
                                   zip(times[k], times[f"{k}_fwd_bwd"], times["dense"]))
              for k in ("dense", "hard")}
    result.update({"hard_over_dense_fwd_bwd": ratio("hard_fwd_bwd", "dense_fwd_bwd"),
                   "update_share_of_dense_step": update})
    if "hard_fused_adamw" in times:
        result["hard_over_dense_fused_adamw"] = ratio("hard_fused_adamw", "dense_fused_adamw")
    return result


def bench_threads(cfg: ModelConfig, b: int, s: int, t: int, n_experts: int, rounds: int,
                  inner: int, peak_n: int, counts: tuple[int, ...] = (2, 1)) -> dict:
    """CPU only: dense and hard training steps and the matmul peak at each thread count; MFU
    of each against its own thread count's peak.

    One block of interleaved rounds per thread count: switching the count between calls
    (measured) made the 2-thread calls slower than 1-thread ones — OpenMP re-forms its team.
    """
    device = torch.device("cpu")
    models = build_models(cfg, n_experts, device)
    batch = make_batch(b, s, t, cfg.vocab_size, device)
    before, times = torch.get_num_threads(), {}
    for n in counts:
        torch.set_num_threads(n)
        fns = {f"{k}@{n}": train_step(models[k], batch, device) for k in ("dense", "hard")}
        fns[f"peak@{n}"] = matmul_op(peak_n, device)
        times.update(time_interleaved(fns, device, rounds, inner))
    torch.set_num_threads(before)
    ms = {k: statistics.median(v) for k, v in times.items()}
    flops_share = train_flops(cfg, b, s, t) / (2 * peak_n**3)  # one step's FLOPs per matmul's FLOPs
    return {str(n): {"dense_ms": ms[f"dense@{n}"], "hard_ms": ms[f"hard@{n}"],
                     "peak_gflops": 2 * peak_n**3 / ms[f"peak@{n}"] / 1e6,
                     "mfu_dense": flops_share * paired(times, f"peak@{n}", f"dense@{n}"),
                     "hard_over_dense": paired(times, f"hard@{n}", f"dense@{n}")} for n in counts}


def hard_path(device: torch.device) -> str:
    """The dispatch path `FastExpertPool(path="auto")` takes for one-hot gates on this device."""
    probe = FastExpertPool([nn.Sequential(nn.Linear(16, 16)) for _ in range(2)]).to(device)
    with autocast_context(device):
        return probe.choose_path(torch.zeros(1, 16, device=device))


def run_bench(quick: bool = False, device: str = "auto", threads: int = 0, rounds: int = 0,
              compile_models: bool = False, n_experts: int = 3, size: str = "default") -> dict:
    """Every measurement; the headline keys are those of the first size (`small`, or `xl`)."""
    dev, threads_before = resolve_device(device), torch.get_num_threads()
    if threads > 0 or quick:  # --quick checks the plumbing, not the speed: 1 thread is gentlest
        torch.set_num_threads(threads or 1)
    try:
        return _run(dev, quick, rounds, compile_models, n_experts, size)
    finally:
        torch.set_num_threads(threads_before)  # the thread count is process-global: put it back


def _run(dev: torch.device, quick: bool, rounds: int, compile_models: bool, n_experts: int,
         size: str = "default") -> dict:
    sizes = BY_SIZE[size][1 if quick else 0]
    # One call per variant per round: short rounds pair variants closely in time.
    rounds, inner = rounds or (2 if quick else 25), 1
    peak_n = 128 if quick else 4096 if dev.type == "cuda" else 1024  # big enough to reach the peak
    result: dict = {"machine": describe_machine(dev), "quick": quick, "rounds": rounds, "inner": inner,
                    "n_experts": n_experts, "hard_path": hard_path(dev), "sizes": {}}
    for name, (cfg, b, s, t) in sizes.items():
        result["sizes"][name] = bench_size(cfg, b, s, t, n_experts, dev, rounds, inner, peak_n,
                                           compile_models)
    if dev.type == "cpu" and "small" in sizes:
        # --quick keeps 1 thread only: on a machine whose other cores are busy, a second
        # thread waits for a time slice at every parallel region (seen: 100× slower steps).
        counts = (1,) if quick else (2, 1)  # 2 first: after a 1-thread block, 2-thread steps ran slower (measured)
        result["threads_sweep"] = bench_threads(*sizes["small"], n_experts, rounds, inner, peak_n, counts)
    small = next(iter(result["sizes"].values()))  # the headline size
    for key in ("hard_over_dense", "hard_general_over_dense", "hard_sorted_over_dense",
                "hard_grouped_over_dense", "soft_over_dense", "extracted_over_dense",
                "dense_over_torch", "peak_gflops"):
        result[key] = small[key]
    # MFU of the small model's training step; the routed step's own cost is hard_over_dense.
    result["mfu"], result["mfu_hard"] = small["mfu_by_variant"]["dense"], small["mfu_by_variant"]["hard"]
    # Token-level routing's FFN beside a dense FFN (lesson 09; minimoe/bench_models.py).
    cfg_small = next(iter(sizes.values()))[0]
    result["token"] = token_ffn_step_ratio(d_model=cfg_small.d_model, d_ff=cfg_small.d_ff, n_experts=n_experts,
                                           k=1, tokens=256 if quick else 1024, rounds=3 if quick else 15)
    result["token_over_dense"] = result["token"]["token_over_dense"]
    limits = {**GOALS, "soft_over_dense": 1.15 * n_experts}  # soft ≤ 1.15 × m × dense
    result["goals"] = {f"{k} {'>=' if k == 'mfu' else '<='} {v:.2f}":
                       bool(result[k] >= v if k == "mfu" else result[k] <= v) for k, v in limits.items()}
    return result


def build_cli(name: str = "bench") -> argparse.ArgumentParser:
    p = Parser(prog=f"minimoe {name}", description=__doc__.splitlines()[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and few rounds (seconds; for tests)")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    p.add_argument("--rounds", type=int, default=0, help="interleaved rounds (0 = 25, or 2 with --quick)")
    p.add_argument("--n_experts", type=int, default=3, help="experts per routed position (m)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd dense and hard steps")
    p.add_argument("--size", choices=sorted(BY_SIZE), default="default",
                   help="default: small and large; xl: d 512, 6+6 layers, batch 64 × src 128 (compute-bound, for a GPU)")
    return p


def cli_main(name: str, args: argparse.Namespace) -> int:
    if args.n_experts < 2:
        raise ConfigError(f"--n_experts={args.n_experts}: the benchmark compares routing, use >= 2.")
    result = run_bench(args.quick, args.device, args.threads, args.rounds, args.compile, args.n_experts, args.size)
    from minimoe.bench_report import format_report

    print(format_report(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0
