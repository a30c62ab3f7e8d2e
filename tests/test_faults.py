"""Fault injection: killed writers, full disks and Ctrl-C never lose finished work (DESIGN §6).

Real processes, real signals:
- SIGKILL at random moments while a driver script writes large checkpoints in a loop: the file
  always loads, is never a mix of two writes, and holds at least the last save that returned;
- a file-size limit (RLIMIT_FSIZE, the kernel's "disk full" for one process) and monkeypatched
  OSErrors at every step of `save_checkpoint`: a CheckpointError naming the fix, the old
  checkpoint intact, no temporary file left behind;
- SIGINT in the middle of a training step (in-process, exact): it takes effect after the step, and
  resuming replays the uninterrupted run bit for bit;
- SIGINT (Ctrl-C) during `python train_tiny.py` training: exit 130 with a one-line message, then
  `--resume` finishes with the same summary.json, losses and checkpoint tensors as an
  uninterrupted run with the same seed;
- SIGINT during `python -m minimoe reproduce --quick`: finished cells stay, the rerun completes
  (results.json); in the slow run its cells also equal those of an uninterrupted reproduction.

Faults injected by the default run: 4 SIGKILLs, 2 real write failures (file-size limit, a file
where the folder should be), 4 monkeypatched OSErrors, 3 SIGINTs; the slow run adds 25 SIGKILLs
and 4 SIGINTs. Lost work in every case: none.

Run: python -m pytest tests/test_faults.py -q          (~40 s on 2 cores: 10 subprocesses)
     python -m pytest tests/test_faults.py -q -m slow  (~4 min: more kills, SIGINT at other moments)
"""

import dataclasses
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from minimoe.batching import Batch
from minimoe.checkpoint import load_checkpoint, save_checkpoint
from minimoe.errors import CheckpointError
from minimoe.presets import PRESETS
from minimoe.train import TrainingInterrupted, fit

ROOT = Path(__file__).resolve().parent.parent
# One torch thread per subprocess: several engineers share two cores; PYTHONUNBUFFERED so that
# progress lines arrive when they are printed (the tests time their signals on them).
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
           PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
CFG = PRESETS["tiny"]


def _sigint_as_in_a_terminal() -> None:
    """In a child before exec: SIGINT at its default, so Python turns it into KeyboardInterrupt.
    A harness that starts the tests in the background (`cmd &`, nohup) hands SIGINT down as
    *ignored*, and minimoe rightly leaves an ignored SIGINT alone (train.py::_ctrl_c_between_steps)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def sigint_raises_keyboard_interrupt():
    """The same for this process: the in-process Ctrl-C test needs Python's default handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


DRIVER = r'''
import os, signal, sys
import torch
sys.path.insert(0, {root!r})
from minimoe.checkpoint import load_checkpoint, save_checkpoint
from minimoe.errors import CheckpointError
from minimoe.presets import PRESETS

torch.set_num_threads(1)
path, mode = sys.argv[1], sys.argv[2]
N = 2_000_000  # 8 MB of float32: a write lasts long enough to be hit by a signal
if mode == "loop":  # save forever; every payload is filled with its own step number
    step = load_checkpoint(path)["step"] if os.path.exists(path) else 0
    print("ready", flush=True)
    while True:
        step += 1
        save_checkpoint(path, {{"step": step, "payload": torch.full((N,), float(step))}}, PRESETS["tiny"])
        print(step, flush=True)  # printed only after save_checkpoint returned
elif mode == "fsize":  # a real write failure: the kernel refuses to grow a file past the limit
    save_checkpoint(path, {{"step": 1, "payload": torch.ones(10)}}, PRESETS["tiny"])
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write() fails with EFBIG instead of a kill
    limit = os.path.getsize(path) + 65536
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        save_checkpoint(path, {{"step": 2, "payload": torch.ones(N)}}, PRESETS["tiny"])
    except CheckpointError as err:
        print("CheckpointError:", err, flush=True)
        sys.exit(3)
'''


class Proc:
    """A subprocess whose stdout lines are pumped by a thread (so waiting for one can time out)
    and whose stderr goes to a file (so a chatty progress bar can never fill a pipe and block)."""

    def __init__(self, args: list[str], cwd: Path, log: Path):
        self.log, self.seen, self._queue = log, [], queue.Queue()
        with open(log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=ENV, text=True,
                                         stdout=subprocess.PIPE, stderr=err,
                                         preexec_fn=_sigint_as_in_a_terminal)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate, timeout: float = 120.0) -> str:
        """The first (further) stdout line for which predicate(line) holds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching line within {timeout} s; got {self.seen[-5:]}") from None
            if line is None:
                raise AssertionError(f"process ended (exit {self.proc.wait()}) before a matching line; "
                                     f"got {self.seen[-5:]}; stderr: {self.log.read_text()[-2000:]}")
            self.seen.append(line)
            if predicate(line):
                return line

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 300.0) -> tuple[int, list[str], str]:
        """(exit code, every stdout line, stderr) once the process has ended."""
        code = self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.seen.append(line)
        return code, self.seen, self.log.read_text()


# --- SIGKILL in the middle of a checkpoint write ---------------------------------------------

def kill_writer_repeatedly(tmp_path: Path, n_kills: int, seed: int) -> dict:
    """Start the writer, let it save at least once, SIGKILL it at a random moment; n_kills times."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(root=str(ROOT)))
    path, rng = tmp_path / "ckpt.pt", random.Random(seed)
    stats = {"kills": 0, "mid_write": 0, "saves": 0}
    for _ in range(n_kills):
        writer = Proc([str(driver), str(path), "loop"], tmp_path, tmp_path / "driver.err")
        writer.wait_for(lambda s: s.isdigit())  # this process finished at least one save
        time.sleep(rng.uniform(0.0, 0.4))
        writer.signal(signal.SIGKILL)
        code, out, _ = writer.finish()
        assert code == -signal.SIGKILL
        saved = [int(s) for s in out if s.isdigit()]
        leftovers = list(tmp_path.glob("ckpt.pt.tmp*"))  # a temp file survives only a mid-write kill
        stats["kills"] += 1
        stats["mid_write"] += bool(leftovers)
        stats["saves"] += len(saved)
        ckpt = load_checkpoint(path)
        # Nothing lost: the last save that returned is there (or the one whose rename beat the kill).
        assert ckpt["step"] in (saved[-1], saved[-1] + 1), (ckpt["step"], saved[-3:])
        # Never a mix of two writes: every value is the step it was saved with.
        assert torch.all(ckpt["payload"] == float(ckpt["step"]))
        assert ckpt["config"] == CFG
        for f in leftovers:  # a crashed writer's temp file is garbage, never read; clean for the next round
            f.unlink()
    return stats


def test_sigkill_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    stats = kill_writer_repeatedly(tmp_path, n_kills=4, seed=0)
    print(f"SIGKILL: {stats}")
    assert stats["kills"] == 4 and stats["mid_write"] >= 1, stats  # at least one kill hit a write


@pytest.mark.slow
def test_sigkill_mid_write_many_times(tmp_path):
    stats = kill_writer_repeatedly(tmp_path, n_kills=25, seed=1)
    print(f"SIGKILL: {stats}")
    assert stats["mid_write"] >= 10, stats


# --- a full disk -----------------------------------------------------------------------------

def test_file_size_limit_during_save_is_a_clear_error_and_keeps_the_old_checkpoint(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(root=str(ROOT)))
    path = tmp_path / "ckpt.pt"
    code, out, err = Proc([str(driver), str(path), "fsize"], tmp_path, tmp_path / "driver.err").finish()
    out = "\n".join(out)
    assert code == 3, (code, out, err)
    assert "CheckpointError:" in out and "intact" in out and "free disk space" in out, out
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("ckpt")] == ["ckpt.pt"]


def _no_space(*args, **kwargs):
    raise OSError(28, "No space left on device")


def _partial_write_then_full(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a zip file")  # some bytes reach the temp file, then the disk is full
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("target, replacement", [
    ("torch.save", _partial_write_then_full),  # while writing the bytes
    ("os.fsync", _no_space),                   # while flushing them to disk
    ("os.replace", _no_space),                 # while renaming over the old checkpoint
    ("tempfile.mkstemp", _no_space),           # while creating the temp file
], ids=["write", "fsync", "rename", "mkstemp"])
def test_os_error_during_save_gives_checkpoint_error_and_keeps_the_old(tmp_path, monkeypatch, target, replacement):
    path = save_checkpoint(tmp_path / "c.pt", {"step": 1, "w": torch.ones(3)}, CFG)
    module, name = target.split(".")
    monkeypatch.setattr({"torch": torch, "os": os, "tempfile": tempfile}[module], name, replacement)
    with pytest.raises(CheckpointError, match=r"No space left.*previous checkpoint \(if any\) is intact.*free disk space"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)}, CFG)
    monkeypatch.undo()
    got = load_checkpoint(path)
    assert got["step"] == 1 and torch.equal(got["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left


def test_unwritable_folder_is_a_checkpoint_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the run folder should be")
    with pytest.raises(CheckpointError, match="could not write checkpoint.*choose another --out"):
        save_checkpoint(blocker / "c.pt", {"step": 1}, CFG)


# --- Ctrl-C during training ------------------------------------------------------------------

class TinyLM(torch.nn.Module):
    """The smallest model `fit` can train (no minimoe layers: this test is about the loop)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.out = torch.nn.Embedding(12, 8), torch.nn.Linear(8, 12)

    def forward(self, src, tgt_in, task, pad_id=0, generator=None):
        return self.out(self.emb(tgt_in))  # [b t v]


def tiny_fit(tmp_path: Path, name: str, ctrl_c_at_call: int | None = None):
    """fit() on random batches; the batch function presses Ctrl-C (a real SIGINT to this
    process) while drawing batch `ctrl_c_at_call`, i.e. in the middle of a step."""
    calls = []

    def next_batch(g: torch.Generator) -> Batch:
        tokens = torch.randint(1, 12, (4, 6), generator=g)  # consumes the data RNG, as real batches do
        if len(calls) == ctrl_c_at_call:
            os.kill(os.getpid(), signal.SIGINT)
        calls.append(1)
        return Batch(src=tokens, tgt_in=tokens[:, :-1], labels=tokens[:, 1:], task=torch.zeros(4, dtype=torch.long))

    model = TinyLM()
    cfg = dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, eval_every=100))  # no periodic checkpoints
    state = fit(model, next_batch, cfg, steps=10, device=torch.device("cpu"), desc="tiny", quiet=True,
                ckpt_path=tmp_path / name)
    return model, state


def test_ctrl_c_in_the_middle_of_a_step_takes_effect_after_it_and_resumes_exactly(tmp_path):
    full_model, full = tiny_fit(tmp_path, "full.pt")
    with pytest.raises(TrainingInterrupted, match=r"interrupted at tiny step 5; checkpoint saved to .*--resume"):
        tiny_fit(tmp_path, "cut.pt", ctrl_c_at_call=4)  # Ctrl-C while drawing the batch of step 4
    assert load_checkpoint(tmp_path / "cut.pt")["step"] == 5  # step 4 was finished, not half-applied
    model, resumed = tiny_fit(tmp_path, "cut.pt")
    assert resumed.history == full.history
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), full_model.state_dict().values()))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # fit put Python's handler back


# Small budgets; enough upstream steps (~1-2 s) for a Ctrl-C to land inside training.
TRAIN = ["--preset=tiny", "--steps=40", "--pretrain_steps=8", "--eval_every=10", "--fs_steps=0",
         "--n_upstream=16", "--n_test=4", "--threads=1", "--seed=0", "--quiet"]
STAGE_LINES = {"pretrain": "[minimoe] 30 seen / 21 unseen tasks",  # printed before pre-training
               "upstream": "[minimoe] pre-trained the dense base"}  # printed before upstream training


def same_run(a: Path, b: Path) -> None:
    """Two run directories hold the same results: summary (but wall time), losses, checkpoints."""
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    sa.pop("wall_seconds"), sb.pop("wall_seconds")
    assert sa == sb
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    for name in ("pretrain.pt", "learned.pt"):
        ca, cb = load_checkpoint(a / name), load_checkpoint(b / name)
        assert ca["step"] == cb["step"] and ca["history"] == cb["history"]
        for key, value in ca["model"].items():
            assert torch.equal(value, cb["model"][key]), (name, key)


def interrupt_and_resume(tmp_path: Path, stage: str, seed: int) -> str:
    """Uninterrupted and interrupted runs side by side; Ctrl-C the second in `stage`, resume it."""
    ref = Proc(["train_tiny.py", *TRAIN, f"--out={tmp_path / 'ref'}"], ROOT, tmp_path / "ref.err")
    victim = Proc(["train_tiny.py", *TRAIN, f"--out={tmp_path / 'cut'}"], ROOT, tmp_path / "cut.err")
    victim.wait_for(lambda s: s.startswith(STAGE_LINES[stage]))
    time.sleep(random.Random(seed).uniform(0.05, 0.3))
    victim.signal(signal.SIGINT)
    code, _, message = victim.finish()
    assert code == 130, message[-2000:]
    assert "interrupted" in message and "--resume" in message and "Traceback" not in message, message[-2000:]
    assert not (tmp_path / "cut" / "summary.json").exists()
    resumed = Proc(["train_tiny.py", *TRAIN, f"--out={tmp_path / 'cut'}", "--resume"], ROOT, tmp_path / "resume.err")
    code, _, err = resumed.finish()
    assert code == 0, err[-2000:]
    code, _, err = ref.finish()
    assert code == 0, err[-2000:]
    same_run(tmp_path / "ref", tmp_path / "cut")
    return message


@pytest.mark.exercise  # runs the whole model (see tests/test_model.py)
def test_ctrl_c_during_training_then_resume_matches_the_uninterrupted_run(tmp_path):
    interrupt_and_resume(tmp_path, "upstream", seed=0)


@pytest.mark.slow
@pytest.mark.exercise
@pytest.mark.parametrize("stage, seed", [("pretrain", 1), ("upstream", 2), ("upstream", 3)])
def test_ctrl_c_at_other_moments(tmp_path, stage, seed):
    interrupt_and_resume(tmp_path, stage, seed)


# --- Ctrl-C during reproduce -----------------------------------------------------------------

REPRODUCE = ["-m", "minimoe", "reproduce", "--quick", "--preset=tiny", "--seeds", "0", "--data_seeds", "100",
             "--jobs", "1", "--cells", "dense,learned", "--set", "steps=30", "pretrain_steps=6", "fs_steps=1", "n_upstream=8",
             "n_test=4", "k_per_class=2", "k_other=2", "threads=1"]


def cell(path: Path) -> dict:
    data = json.loads(path.read_text())
    data.pop("seconds")  # compute time, the one field that may differ
    return data


def interrupt_reproduce(tmp_path: Path, with_reference: bool) -> None:
    """Ctrl-C a reproduction once its first cell is done; rerun it; optionally compare the cells
    with an uninterrupted reproduction run side by side."""
    ref = Proc([*REPRODUCE, "--out", str(tmp_path / "ref")], ROOT, tmp_path / "ref.err") if with_reference else None
    out = tmp_path / "cut"
    victim = Proc([*REPRODUCE, "--out", str(out)], ROOT, tmp_path / "cut.err")
    deadline = time.monotonic() + 300
    while not (out / "seed0" / "dense.json").is_file():  # the first cell is finished
        assert victim.proc.poll() is None and time.monotonic() < deadline, victim.finish()[2][-2000:]
        time.sleep(0.02)
    dense = (out / "seed0" / "dense.json").read_bytes()
    time.sleep(random.Random(0).uniform(0.05, 0.3))
    victim.signal(signal.SIGINT)
    code, _, message = victim.finish()
    assert code == 130, message[-2000:]
    assert "interrupted" in message and "Traceback" not in message, message[-2000:]
    assert not (out / "results.json").exists() and not (out / "seed0" / "learned.json").exists()
    code, _, err = Proc([*REPRODUCE, "--out", str(out)], ROOT, tmp_path / "rerun.err").finish()
    assert code == 0, err[-2000:]
    assert (out / "seed0" / "dense.json").read_bytes() == dense  # the finished cell was not recomputed
    results = json.loads((out / "results.json").read_text())
    assert set(results["seen_mean"]) == {"dense", "learned"}
    if ref is None:
        return
    code, _, err = ref.finish()
    assert code == 0, err[-2000:]
    for name in ("dense", "learned"):
        assert cell(out / "seed0" / f"{name}.json") == cell(tmp_path / "ref" / "seed0" / f"{name}.json"), name


@pytest.mark.exercise
def test_ctrl_c_during_reproduce_keeps_finished_cells_and_the_rerun_completes(tmp_path):
    interrupt_reproduce(tmp_path, with_reference=False)


@pytest.mark.slow
@pytest.mark.exercise
def test_ctrl_c_during_reproduce_then_rerun_matches_the_uninterrupted_cells(tmp_path):
    interrupt_reproduce(tmp_path, with_reference=True)
