"""The human-readable table of `minimoe bench` (minimoe/bench.py measures; this file prints).

format_report(result) takes the dict `run_bench` returns (also what `--json` writes) and
returns the table: the machine, one block per model size with ms, tokens/s, × dense, GFLOP/s
and MFU per variant, the thread sweep, and the performance goals.
"""

from __future__ import annotations


LABELS = {"dense": "dense (n_experts=1)", "hard": "hard (st_gumbel, default path)",
          "hard_sorted": "hard, sorted (a call per expert)",
          "hard_grouped": "hard, grouped GEMM (per Linear)",
          "hard_general": "hard, group/dispatch/combine path",
          "soft": "soft (softmax, all experts run)", "extracted": "extracted dense",
          "torch": "torch.nn.Transformer", "dense_fused_adamw": "dense, fused AdamW",
          "hard_fused_adamw": "hard, fused AdamW", "dense_plain_fp32": "dense, fp32 + default AdamW",
          "dense_compiled": "dense, torch.compile",
          "hard_compiled": "hard, torch.compile", "dense_fwd_bwd": "dense, fwd+bwd only",
          "hard_fwd_bwd": "hard, fwd+bwd only", "infer_dense": "dense", "infer_extracted": "extracted",
          "infer_hard": "routed (hard)"}


def format_report(result: dict) -> str:
    """The human-readable table: the machine, one block per size, threads, goals."""
    m = result["machine"]
    lines = [f"machine: {m['cpu']} ({m['cores']} cores{', ' + m['gpu'] if 'gpu' in m else ''}), torch "
             f"{m['torch']}, {m['device']}, {m['threads']} threads, load avg {m['load_avg_1min']}",
             f"median of {result['rounds']} interleaved rounds × {result['inner']} calls; "
             f"ratios = median of per-round ratios; m = {result['n_experts']} experts; hard routing's "
             f"default path here: {result['hard_path']}"]
    if (m["load_avg_1min"] or 0) > 0.5 * (m["cores"] or 1):  # others compete for the cores
        lines.append(f"WARNING: load average {m['load_avg_1min']} on {m['cores']} cores: other processes "
                     "compete; rerun when the machine is idle (or with --threads=1)")
    for name, r in result["sizes"].items():
        c, ms, x = r["config"], r["ms"], r["over_dense"]
        lines += ["", f"[{name}] d {c['d_model']}, h {c['n_heads']}, f {c['d_ff']}, "
                  f"{c['n_enc_layers']}+{c['n_dec_layers']} layers, v {c['vocab_size']}; "
                  f"batch {c['batch']} × (src {c['src_len']} + tgt {c['tgt_len']}), "
                  f"{c['n_tasks_in_batch']} tasks; "
                  f"matmul peak {r['peak_gflops']:.0f} GFLOP/s",
                  f"  {'training step (fwd+bwd+AdamW)':34s}{'ms':>8s}{'tok/s':>8s}{'× dense':>9s}"
                  f"{'GFLOP/s':>9s}{'MFU':>7s}"]
        for k in (k for k in LABELS if k in x):
            if k == "infer_dense":
                lines.append("  inference (eval forward, no grad)")
            tokens = f"{r['tokens_per_s'][k]:8.0f}" if k in r["tokens_per_s"] else " " * 8
            mfu = f"{r['gflops_per_s'][k]:9.1f}{r['mfu_by_variant'][k]:7.1%}" if k in r["train_flops"] else ""
            lines.append(f"  {LABELS[k]:34s}{ms[k]:8.2f}{tokens}{x[k]:9.2f}{mfu}")
        if "update_share_of_dense_step" in r:
            u = r["update_share_of_dense_step"]
            lines.append(f"  split: fwd+bwd hard × {r['hard_over_dense_fwd_bwd']:.2f} dense; clip + AdamW = "
                         f"{u['dense']:.2f} of a dense step for dense, {u['hard']:.2f} for hard (m× parameters)")
        gen = r["generate_tokens_per_s"]
        lines.append(f"  greedy generation, one task: routed {gen['hard']:.0f} tok/s, extracted "
                     f"{gen['extracted']:.0f} tok/s (time × {r['routed_generate_over_extracted']:.2f})")
    for n, th in result.get("threads_sweep", {}).items():
        lines.append(f"threads {n}: dense {th['dense_ms']:.2f} ms, hard {th['hard_ms']:.2f} ms "
                     f"(× {th['hard_over_dense']:.2f}), peak {th['peak_gflops']:.0f} GFLOP/s, "
                     f"MFU dense {th['mfu_dense']:.1%}")
    goals = ", ".join(f"{k}: {'yes' if ok else 'NO'}" for k, ok in result["goals"].items())
    return "\n".join(lines + ["", f"goals (small): {goals}", f"MFU of the small training step: dense "
                              f"{result['mfu']:.1%}, hard-routed {result['mfu_hard']:.1%}"])
