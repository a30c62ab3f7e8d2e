"""Tests for minimoe/train.py (the loop) and minimoe/batching.py: safety and learning.

- resume after an interruption continues exactly like the uninterrupted run;
- the same seed gives identical losses and weights;
- a non-finite loss stops training with a message and keeps the last good checkpoint;
- Ctrl-C (KeyboardInterrupt) leaves a loadable checkpoint of the current step;
- the model really learns: a two-category problem goes well above chance in a fixed budget;
- exercise 6.1 (`ex6_1`, `train_step`): one step equals a step computed by hand from the formulas
  (smoothed loss without padding, aux loss, clipping, SGD update), the schedule scales the base
  rates, and a non-finite loss changes nothing.
Run: python -m pytest tests/test_train.py -q
"""

import dataclasses

import pytest
import torch

from minimoe.batching import Batch, TaskData
from minimoe.checkpoint import load_checkpoint
from minimoe.model import TaskMoETransformer
from minimoe.presets import PRESETS, apply_overrides
import minimoe.train as train_module
from minimoe.train import NonFiniteLoss, TrainingInterrupted, fit, lr_factor, seq2seq_loss, train_step

# These tests run the whole model, whose core functions are classroom exercises (masks,
# dispatch, straight-through routes): in a student copy they wait until the exercises are done.
pytestmark = pytest.mark.exercise


class Tok:
    """A minimal tokenizer over numbered words w0…w29 (specials 0–4)."""

    pad_id, bos_id, eos_id, unk_id, mask_id = 0, 1, 2, 3, 4
    vocab_size = 35

    def encode(self, text):
        return [5 + int(w[1:]) for w in text.split()]

    def decode(self, ids):
        return " ".join(f"w{i - 5}" for i in ids if i >= 5)


def two_task_data(n=256, seed=0, device="cpu"):
    """Task 0: copy the first word; task 1: say w0 if the first word is even else w1."""
    g = torch.Generator().manual_seed(seed)
    sources, targets, tasks = [], [], []
    for i in range(n):
        words = (torch.randint(2, 30, (5,), generator=g)).tolist()
        task = i % 2
        sources.append(" ".join(f"w{w}" for w in [task] + words))
        targets.append(f"w{words[0]}" if task == 0 else ("w0" if words[0] % 2 == 0 else "w1"))
        tasks.append(task)
    return TaskData(Tok(), sources, targets, tasks, max_len=16, device=torch.device(device))


def make_model(cfg):
    torch.manual_seed(cfg.train.seed)
    mcfg = dataclasses.replace(cfg.model, vocab_size=Tok.vocab_size)
    return TaskMoETransformer(mcfg, cfg.router, n_tasks=2)


CFG = apply_overrides(PRESETS["tiny"], {"steps": 12, "eval_every": 4, "batch_size": 8})


def run(tmp_path, cfg=CFG, name="c.pt", device="cpu", **kw):
    data = two_task_data(64, device=device)
    model = make_model(cfg).to(device)
    state = fit(model, lambda g: data.sample(cfg.train.batch_size, g), cfg, steps=cfg.train.steps,
                device=torch.device(device), desc="test", ckpt_path=tmp_path / name, quiet=True, **kw)
    return model, state


def test_same_seed_gives_identical_runs(tmp_path):
    m1, s1 = run(tmp_path, name="a.pt")
    m2, s2 = run(tmp_path, name="b.pt")
    assert s1.history == s2.history
    for (k, v), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v, v2), k


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])])
def test_resume_after_interrupt_matches_uninterrupted(tmp_path, device):
    _, full = run(tmp_path, name="full.pt", device=device)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        run(tmp_path, name="part.pt", device=device, on_checkpoint=_interrupt_at(8))
    saved = load_checkpoint(tmp_path / "part.pt")
    assert 0 < saved["step"] < CFG.train.steps  # a checkpoint of the interrupted step
    model, resumed = run(tmp_path, name="part.pt", device=device)
    assert [round(l, 6) for _, l in resumed.history] == [round(l, 6) for _, l in full.history]
    assert resumed.history == full.history


def _interrupt_at(step):
    """A checkpoint hook that presses Ctrl-C once, when `step` is reached."""
    fired = []

    def hook(s):
        if s == step and not fired:
            fired.append(s)
            raise KeyboardInterrupt
    return hook


def test_keyboard_interrupt_leaves_a_loadable_checkpoint(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, on_checkpoint=_interrupt_at(8))
    ckpt = load_checkpoint(tmp_path / "c.pt")
    model = make_model(CFG)
    model.load_state_dict(ckpt["model"])
    assert ckpt["step"] in (4, 8)


def nan_loss_at(monkeypatch, bad_step):
    """Make the loss of step `bad_step` NaN (the training loop computes one loss per step)."""
    calls = []

    def poisoned(*args):
        calls.append(None)
        loss = seq2seq_loss(*args)
        return loss * float("nan") if len(calls) == bad_step + 1 else loss
    monkeypatch.setattr(train_module, "seq2seq_loss", poisoned)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, 6)
    with pytest.raises(NonFiniteLoss, match="non-finite loss.*step 6.*kept"):
        run(tmp_path)
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt["step"] == 4  # the last checkpoint before the bad step
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_lr_schedule_warms_up_then_decays():
    assert lr_factor(0, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 0.1) == pytest.approx(0.5)
    assert lr_factor(100, 100, 0.1) == 0.0


def test_loss_ignores_padding():
    logits = torch.randn(2, 3, 7)
    labels = torch.tensor([[4, 5, 0], [6, 0, 0]])
    full = seq2seq_loss(logits, labels, pad_id=0, smoothing=0.0)
    manual = torch.nn.functional.cross_entropy(logits[labels != 0], labels[labels != 0])
    torch.testing.assert_close(full, manual)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("routing, selection, device", [
    ("dense", "softmax", "cpu"), ("learned", "softmax", "cpu"),
    # On CUDA: bf16 autocast, fused AdamW; random task routes are one-hot, so the pools take the
    # sorted speed path. (st_gumbel learns the copy task too slowly for 250 steps, CPU or CUDA.)
    pytest.param("random", "softmax", "cuda", marks=[CUDA, pytest.mark.cuda]),
    pytest.param("learned", "softmax", "cuda", marks=[CUDA, pytest.mark.cuda])])
def test_model_really_learns_two_categories(tmp_path, routing, selection, device):
    """Copy (extractive) and parity label (classification): far above chance in 250 steps."""
    over = {"steps": 250, "batch_size": 32, "lr": 3e-3, "warmup_frac": 0.05, "label_smoothing": 0.0,
            "routing": routing, "n_experts": 1 if routing == "dense" else 2, "selection": selection}
    cfg = apply_overrides(PRESETS["tiny"], over)
    train, test = two_task_data(1024, seed=0, device=device), two_task_data(200, seed=1, device=device)
    model = make_model(cfg).to(device)
    fit(model, lambda g: train.sample(32, g), cfg, steps=cfg.train.steps, device=torch.device(device),
        desc="learn", quiet=True)
    model.eval()
    batch = next(test.batches(200))
    out = model.generate(batch.src, batch.task, max_new=2)
    acc = (out[:, 0] == batch.labels[:, 0]).float()
    copy_acc, label_acc = acc[batch.task == 0].mean(), acc[batch.task == 1].mean()
    # Chance: 1/28 for copying, 1/2 for the label.
    assert copy_acc > 0.5 and label_acc > 0.8, (copy_acc, label_acc)


# --- exercise 6.1: one training step, against a step computed by hand ---------------------------
# A two-layer stand-in for the model (no attention, no routes), so these tests need no other
# exercise. Plain SGD makes the update readable: p ← p − lr · clipped gradient.


class TinyLM(torch.nn.Module):
    """logits [b t v] from tgt_in alone; optionally an aux_loss, as token-routed models have."""

    def __init__(self, v=9, aux_weight=None):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.out = torch.nn.Embedding(v, 6), torch.nn.Linear(6, v)
        self.aux_weight = aux_weight
        if aux_weight is not None:
            self.aux_loss = lambda: aux_weight * self.out.weight.square().sum()

    def forward(self, src, tgt_in, task, pad_id=0, generator=None):
        return self.out(self.emb(tgt_in))


def step_batch():
    tgt = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 3, 4, 2, 0]])  # padded with 0
    return Batch(src=tgt, tgt_in=tgt[:, :-1], labels=tgt[:, 1:], task=torch.zeros(3, dtype=torch.long))


def step_cfg(smoothing=0.1, clip=1.0, warmup=0.25):
    return apply_overrides(PRESETS["tiny"], {"label_smoothing": smoothing, "grad_clip": clip, "warmup_frac": warmup})


def hand_step(model, batch, cfg, lr):
    """The expected loss and parameters after one SGD step, from the formulas alone."""
    params = list(model.parameters())
    logits = model(batch.src, batch.tgt_in, batch.task)
    real = batch.labels != 0
    logp = torch.log_softmax(logits.float(), -1)[real]                      # real tokens only
    nll, uniform = -logp.gather(1, batch.labels[real][:, None])[:, 0], -logp.mean(-1)
    eps = cfg.train.label_smoothing
    loss = ((1 - eps) * nll + eps * uniform).mean()
    if getattr(model, "aux_weight", None) is not None:
        loss = loss + model.aux_loss()
    grads = torch.autograd.grad(loss, params)
    norm = torch.sqrt(sum(g.square().sum() for g in grads))
    scale = min(1.0, cfg.train.grad_clip / (float(norm) + 1e-6))            # clip_grad_norm_'s rule
    return loss.item(), [p.detach() - lr * scale * g for p, g in zip(params, grads)], float(norm)


@pytest.mark.ex6_1
@pytest.mark.parametrize("smoothing, clip, aux", [(0.1, 1e3, None), (0.0, 1e3, None), (0.1, 0.05, None),
                                                  (0.1, 1e3, 0.3), (0.1, 0.05, 0.3)],
                         ids=["smoothed", "unsmoothed", "clipped", "aux_loss", "aux_loss_clipped"])
def test_one_step_equals_the_hand_computed_step(smoothing, clip, aux):
    """Loss (label smoothing, padding ignored, + aux_loss), gradient, clipping, update, lr."""
    cfg, batch = step_cfg(smoothing, clip), step_batch()
    model = TinyLM(aux_weight=aux)
    step, steps, base = 1, 8, 0.5                                            # warmup: 2 steps, so factor 1.0
    loss, expected, norm = hand_step(model, batch, cfg, base * lr_factor(step, steps, 0.25))
    assert clip > norm or clip < norm / 2, "each case clips clearly or not at all"
    for p in model.parameters():                                             # a previous step's gradients
        p.grad = torch.full_like(p, 3.0)
    opt = torch.optim.SGD(model.parameters(), lr=123.0)                      # the current lr is not the base
    got = train_step(model, opt, batch, cfg, torch.device("cpu"), step=step, steps=steps, base_lrs=[base])
    assert type(got) is float and got == pytest.approx(loss, rel=1e-6)
    for p, q in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), q, rtol=1e-5, atol=1e-6)


@pytest.mark.ex6_1
def test_the_schedule_scales_each_groups_base_rate_every_step():
    """Warmup then linear decay of the *base* rates (two groups, two rates), step after step."""
    cfg, batch, model = step_cfg(warmup=0.25), step_batch(), TinyLM()
    bases = [0.2, 0.05]
    opt = torch.optim.SGD([{"params": model.emb.parameters(), "lr": 0.2},
                           {"params": model.out.parameters(), "lr": 0.05}], lr=0.1)
    for step in range(8):
        train_step(model, opt, batch, cfg, torch.device("cpu"), step=step, steps=8, base_lrs=bases)
        factor = lr_factor(step, 8, 0.25)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([b * factor for b in bases]), step


@pytest.mark.ex6_1
@pytest.mark.parametrize("poison", ["logits", "aux_loss"])
def test_a_non_finite_loss_changes_nothing(poison):
    """NonFiniteLoss names the step and the checkpoint; the weights and AdamW's state stay."""
    model = TinyLM(aux_weight=0.1)
    if poison == "logits":
        model.out.bias.data[5] = float("inf")
    else:
        model.aux_loss = lambda: torch.tensor(float("nan"))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss.*at stage x step 3.*the step was not applied.*c\.pt"):
        train_step(model, opt, step_batch(), step_cfg(), torch.device("cpu"), step=3, steps=8, base_lrs=[0.1],
                   where="stage x step 3", ckpt="c.pt")
    assert all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before))
    assert not opt.state, "the optimizer must not have stepped"
