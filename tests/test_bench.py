"""Tests of minimoe/bench.py, bench_models.py and flops.py: the benchmark runs, and FLOPs are counted right.

Oracles: a hand count of the matmul FLOPs of a tiny dense model, written out term by term;
`torch.utils.flop_counter.FlopCounterMode` (which counts every mm/bmm/addmm that really runs)
on dense, hard, soft and FFN-expert models, forward and forward+backward. The timer alternates
variants round by round and pairs them. The benchmark is run with `--quick` through the CLI
and must write a JSON with every documented field.
Timings are never asserted: they depend on the machine and its load.
Run: python -m pytest tests/test_bench.py -q
"""

import dataclasses
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from minimoe import bench, bench_models
from minimoe.cli import main as cli
from minimoe.config import ModelConfig, RouterConfig
from minimoe.flops import (active_matmul_params, forward_flops, measure_peak_gflops, paired,
                           time_interleaved, train_flops)
from minimoe.model import TaskMoETransformer

pytestmark = pytest.mark.exercise  # runs the whole model, whose core functions are exercises

TINY = ModelConfig(vocab_size=10, d_model=4, n_heads=2, d_ff=8, n_enc_layers=1, n_dec_layers=1,
                   n_experts=1, fused_attention="off")


def test_flops_match_a_hand_count_for_a_tiny_dense_model():
    # b 2, s 3, t 2, d 4, f 8, v 10; per sequence, 2 FLOPs per multiply-add:
    enc = (4 * 2 * 4 * 4 * 3       # q, k, v, out projections of 3 source tokens: 384
           + 2 * 2 * 3 * 3 * 4     # scores q·kᵀ and weighted sum over 3×3 pairs: 144
           + 2 * 2 * 4 * 8 * 3)    # FFN 4 → 8 → 4 on 3 tokens: 384
    dec = (4 * 2 * 4 * 4 * 2       # self-attention projections of 2 target tokens: 256
           + 2 * 2 * 2 * 2 * 4     # causal scores + sum, full 2×2 computed: 64
           + 2 * 2 * 4 * 4 * 2     # cross-attention q and out projections: 128
           + 2 * 2 * 4 * 4 * 3     # cross-attention k and v of 3 memory tokens: 192
           + 2 * 2 * 2 * 3 * 4     # cross scores + sum over 2×3 pairs: 96
           + 2 * 2 * 4 * 8 * 2)    # FFN on 2 tokens: 256
    head = 2 * 4 * 10 * 2          # tied output head on 2 target tokens: 160
    assert (enc, dec, head) == (912, 992, 160)
    assert forward_flops(TINY, b=2, s=3, t=2) == 2 * (912 + 992 + 160) == 4128
    assert train_flops(TINY, b=2, s=3, t=2) == 3 * 4128
    # the 6·N·tokens view: N per token kind (d² and d·f weights, plus the head for targets)
    assert active_matmul_params(TINY) == {"encoder_token": 4 * 16 + 2 * 32,
                                          "decoder_token": 6 * 16 + 2 * 32 + 40, "memory_token": 2 * 16}


@pytest.mark.parametrize("n_experts,selection,expert_kind", [
    (1, "st_gumbel", "layer"), (3, "st_gumbel", "layer"), (3, "softmax", "layer"), (2, "softmax", "ffn")])
def test_flops_equal_torch_flop_counter(n_experts, selection, expert_kind):
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, d_model=8, d_ff=12, n_enc_layers=2, n_experts=n_experts,
                              expert_kind=expert_kind)
    rcfg = RouterConfig(selection=selection, routing="learned" if n_experts > 1 else "dense",
                        d_task=6, d_router_hidden=5)
    model = TaskMoETransformer(cfg, rcfg, n_tasks=4)
    src, tgt = torch.randint(3, 10, (5, 7)), torch.randint(3, 10, (5, 3))
    tasks = torch.tensor([0, 1, 2, 3, 0])  # 4 distinct tasks: a mixed batch
    run = n_experts if selection == "softmax" else 1
    with FlopCounterMode(display=False) as forward_only:
        model(src, tgt, tasks)
    with FlopCounterMode(display=False) as both:
        model(src, tgt, tasks).sum().backward()
    assert forward_only.get_total_flops() == forward_flops(cfg, 5, 7, 3, run, rcfg, n_batch_tasks=4)
    assert both.get_total_flops() == train_flops(cfg, 5, 7, 3, run, rcfg, n_batch_tasks=4)


def test_timer_interleaves_and_pairs_rounds():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = time_interleaved(fns, torch.device("cpu"), rounds=3, inner=1)
    assert calls[6:] == list("abc" "cba" "abc")  # after 2 warm-up calls each: ABC CBA ABC
    assert all(len(v) == 3 for v in times.values())
    # a load burst in round 3 inflates both variants; the paired ratio ignores it
    assert paired({"a": [2.0, 4.0, 100.0], "b": [1.0, 2.0, 10.0]}, "a", "b") == 2.0
    assert measure_peak_gflops(n=64, rounds=2) > 0


def test_bench_quick_writes_json_with_every_field(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert cli(["bench", "--quick", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "machine:" in out and "goals" in out and "torch.nn.Transformer" in out
    result = json.loads(path.read_text())
    for key in ("hard_over_dense", "hard_general_over_dense", "hard_sorted_over_dense",
                "hard_grouped_over_dense", "soft_over_dense", "extracted_over_dense", "dense_over_torch",
                "mfu", "mfu_hard", "peak_gflops", "n_experts", "machine", "goals", "sizes", "hard_path"):
        assert key in result, key
    assert result["hard_path"] in ("sorted", "grouped")
    assert f"default path here: {result['hard_path']}" in out
    assert result["n_experts"] == 3 and set(result["sizes"]) == {"small", "large"}
    for size in result["sizes"].values():
        assert set(size["ms"]) >= {"dense", "hard", "hard_sorted", "hard_general", "soft", "extracted", "torch", "infer_dense",
                                   "infer_extracted", "infer_hard", "generate_hard", "generate_extracted"}
        assert all(value > 0 for value in size["ms"].values())
        assert all(len(rounds) == result["rounds"] for rounds in size["ms_rounds"].values())
        assert size["config"]["n_tasks_in_batch"] >= 8  # rows really are grouped per expert
        assert {"dense_fwd_bwd", "hard_fwd_bwd"} <= set(size["ms"]) and size["hard_over_dense_fwd_bwd"] > 0
        assert set(size["update_share_of_dense_step"]) == {"dense", "hard"}
    assert "split: fwd+bwd hard" in out
    if torch.device(result["machine"]["device"]).type == "cpu":
        assert set(result["threads_sweep"]) == {"1"}  # --quick: 1 thread only (see bench.run_bench)


def test_bench_rejects_a_single_expert():
    with pytest.raises(SystemExit):  # argparse: not an int
        cli(["bench", "--n_experts", "x"])
    assert cli(["bench", "--quick", "--n_experts", "1"]) == 2  # a one-line error, exit 2


def test_torch_reference_has_minimoe_shapes():
    cfg = dataclasses.replace(TINY, d_model=8, d_ff=12)
    ref = bench_models.TorchTransformer(cfg)
    src, tgt = torch.randint(3, 10, (2, 5)), torch.randint(3, 10, (2, 3))
    src[0, -2:] = 0
    assert ref(src, tgt).shape == (2, 3, 10)
    mine = TaskMoETransformer(cfg, RouterConfig(routing="dense"), 1)
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # same weights except torch's fused in-projection biases and the bias-free tied head
    assert abs(n_params(ref) - n_params(mine)) < 0.02 * n_params(mine)


@pytest.mark.parametrize("variant", ["as_training", "fused_adamw", "plain_fp32"])
def test_train_step_variants_train(variant):
    cfg, b, s, t = bench.QUICK["small"]
    model = bench_models.build_models(cfg, 2, torch.device("cpu"))["hard"]
    before = [p.detach().clone() for p in model.parameters()]
    bench_models.train_step(model, bench_models.make_batch(b, s, t, cfg.vocab_size, torch.device("cpu")),
                     torch.device("cpu"), variant)()
    assert any(not torch.equal(p0, p) for p0, p in zip(before, model.parameters()))


def test_fwd_bwd_variant_computes_gradients_but_updates_nothing():
    cfg, b, s, t = bench.QUICK["small"]
    model = bench_models.build_models(cfg, 2, torch.device("cpu"))["hard"]
    before = [p.detach().clone() for p in model.parameters()]
    bench_models.train_step(model, bench_models.make_batch(b, s, t, cfg.vocab_size, torch.device("cpu")),
                            torch.device("cpu"), "fwd_bwd")()
    assert all(torch.equal(p0, p) for p0, p in zip(before, model.parameters()))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
