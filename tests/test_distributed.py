"""Tests of minimoe/distributed.py: data-parallel training equals one process.

Oracle: `train.fit` on one process. `ddp_fit` on a world of one must reproduce its loss curve
exactly; two CPU processes (torch.multiprocessing spawn, gloo on localhost), each with half of
the same global batch, must follow it to 1e-5 — with a hard-routed MoE (so experts go unused
on one rank) and rows whose real-token counts differ (so the loss weighting matters).
Run: python -m pytest tests/test_distributed.py -q   (spawns 2 processes: a few seconds)
"""

import dataclasses
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from minimoe.batching import Batch
from minimoe.distributed import Rank, cleanup, ddp_fit, setup, shard_rows
from minimoe.model import TaskMoETransformer
from minimoe.presets import PRESETS, apply_overrides
from minimoe.train import fit

pytestmark = pytest.mark.exercise  # runs the whole model, whose core functions are exercises

V, N_TASKS, B, S, T, STEPS = 19, 6, 8, 7, 4, 6
CFG = apply_overrides(PRESETS["tiny"], {"batch_size": B, "n_experts": 3, "selection": "st_gumbel",
                                        "d_model": 16, "d_ff": 32, "warmup_frac": 0.2, "lr": 3e-3})
TAU = lambda step: 2.0 * 0.8**step  # noqa: E731  (a changing τ, as in training)


def make_model() -> TaskMoETransformer:
    torch.manual_seed(0)
    return TaskMoETransformer(dataclasses.replace(CFG.model, vocab_size=V), CFG.router, N_TASKS)


def next_batch(gen: torch.Generator) -> Batch:
    """A mixed-task batch drawn only from `gen`; rows have 1..T real target tokens."""
    src = torch.randint(3, V, (B, S), generator=gen)
    tgt = torch.randint(3, V, (B, T + 1), generator=gen)
    lengths = torch.randint(2, T + 2, (B,), generator=gen)
    tgt[torch.arange(T + 1)[None, :] >= lengths[:, None]] = 0  # right padding: uneven token counts
    task = torch.randint(0, N_TASKS, (B,), generator=gen)
    return Batch(src, tgt[:, :-1], tgt[:, 1:], task)


def one_process_curve() -> list[float]:
    state = fit(make_model(), next_batch, CFG, steps=STEPS, device=torch.device("cpu"), desc="ref",
                tau_fn=TAU, quiet=True)
    return [loss for _, loss in state.history]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    """One spawned process: join the gloo group on localhost, train, rank 0 writes the curve."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = setup(backend="gloo")
    try:
        history = ddp_fit(make_model(), next_batch, CFG, steps=STEPS, rank=info, tau_fn=TAU)
        if rank == 0:
            with open(out, "w", encoding="utf-8") as f:
                json.dump([loss for _, loss in history], f)
    finally:
        cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shards_cover_every_row_once():
    for n_rows, world in [(8, 2), (7, 2), (5, 3), (3, 3)]:
        rows = [list(range(n_rows))[shard_rows(n_rows, Rank(r, world, torch.device("cpu")))]
                for r in range(world)]
        assert sum(rows, []) == list(range(n_rows))
        assert max(map(len, rows)) - min(map(len, rows)) <= 1
    with pytest.raises(ValueError, match="batch_size"):
        shard_rows(1, Rank(0, 2, torch.device("cpu")))


def test_world_of_one_reproduces_fit_exactly():
    one = ddp_fit(make_model(), next_batch, CFG, steps=STEPS, rank=setup(), tau_fn=TAU)
    assert [loss for _, loss in one] == one_process_curve()


def test_two_processes_follow_the_one_process_loss_curve(tmp_path):
    expected = one_process_curve()
    out = tmp_path / "curve.json"
    # fork (Linux) lets the children reuse the imported torch: ~1 s instead of ~15 s on a busy
    # 2-core machine; each child sets 1 thread before any parallel work, which keeps fork safe.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True, start_method=method)
    got = json.loads(out.read_text())
    assert len(got) == STEPS
    assert abs(expected[0] - expected[-1]) > 1e-2  # the curve moves: the check has teeth
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=0, atol=1e-5)


def test_non_finite_loss_stops_before_the_step(monkeypatch):
    from minimoe import distributed
    from minimoe.train import NonFiniteLoss

    nan_loss = lambda logits, *args: logits.sum() * float("nan")  # noqa: E731
    monkeypatch.setattr(distributed, "seq2seq_loss", nan_loss)
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteLoss, match="step 0"):
        ddp_fit(model, next_batch, CFG, steps=2, rank=setup(), tau_fn=TAU)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
