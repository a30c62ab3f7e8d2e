"""Fault injection: killed writers, full disks and Ctrl-C never lose finished work .

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
- SIGTERM (a scheduler's preemption) the same way: mid-step in-process, during `train_tiny.py`
  (exit 143, a checkpoint of that step, an exact resume), to `reproduce --jobs 2` (every process
  of it gone within 10 s, finished cells kept, the rerun computes only the rest), to `grade`
  (its pytest runs stopped) and to a `minimoe.distributed` rank (exit 143, one line);
- no orphans: a pool worker whose parent was SIGKILLed stops by itself, and an interrupted
  command stops the subprocesses its threads wait on, with theirs; in the slow run, the ranks
  of a torchrun that was stopped or killed.

Faults injected by the default run (in-process and short subprocesses): 1 SIGKILL, 2 real write
failures (file-size limit, a file where the folder should be), 4 monkeypatched OSErrors, 1 SIGINT,
4 SIGTERMs; the slow run (every killed, interrupted and resumed training or reproduction; CI runs
it, .ci/run) adds 30 SIGKILLs, 6 SIGINTs, 4 SIGTERMs and a SIGHUP. Lost work in every case: none.

Run: python -m pytest tests/test_faults.py -q          (seconds)
     python -m pytest tests/test_faults.py -q -m slow  (minutes: the runs that are killed or interrupted)
"""

import dataclasses
import json
import os
import queue
import random
import re
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
from minimoe.interrupt import STOP_SIGNALS, children_stopped, exit_status, like_ctrl_c, run_child
from minimoe.presets import PRESETS
from minimoe.train import TrainingInterrupted, fit

ROOT = Path(__file__).resolve().parent.parent
# One torch thread per subprocess: several engineers share two cores; PYTHONUNBUFFERED so that
# progress lines arrive when they are printed (the tests time their signals on them).
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
           PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
CFG = PRESETS["tiny"]


def _signals_as_in_a_terminal() -> None:
    """In a child before exec: stop signals at their defaults, so Python turns SIGINT into
    KeyboardInterrupt and minimoe SIGTERM and SIGHUP too. A harness that starts the tests in the
    background (`cmd &`, nohup) hands SIGINT (and SIGHUP) down as *ignored*, and minimoe rightly
    leaves an ignored signal alone (minimoe/interrupt.py)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def sigint_raises_keyboard_interrupt():
    """The same for this process: the in-process tests need Python's default handlers."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler), signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGINT, previous[0])
    signal.signal(signal.SIGTERM, previous[1])


DRIVER = r'''
import os, signal, sys
import torch
sys.path.insert(0, {root!r})
from minimoe.checkpoint import load_checkpoint, save_checkpoint
from minimoe.errors import CheckpointError
from minimoe.interrupt import STOP_SIGNALS, children_stopped, exit_status, like_ctrl_c, run_child
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

    def __init__(self, args: list[str], cwd: Path, log: Path, env: dict | None = None):
        self.log, self.seen, self._queue = log, [], queue.Queue()
        with open(log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env or ENV, text=True,
                                         stdout=subprocess.PIPE, stderr=err,
                                         preexec_fn=_signals_as_in_a_terminal)
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


@pytest.mark.slow
@pytest.mark.ci
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


def tiny_fit(tmp_path: Path, name: str, ctrl_c_at_call: int | None = None, signum: int = signal.SIGINT):
    """fit() on random batches; the batch function presses Ctrl-C (a real SIGINT to this
    process; or another `signum`) while drawing batch `ctrl_c_at_call`, i.e. in the middle of a step."""
    calls = []

    def next_batch(g: torch.Generator) -> Batch:
        tokens = torch.randint(1, 12, (4, 6), generator=g)  # consumes the data RNG, as real batches do
        if len(calls) == ctrl_c_at_call:
            os.kill(os.getpid(), signum)
        calls.append(1)
        return Batch(src=tokens, tgt_in=tokens[:, :-1], labels=tokens[:, 1:], task=torch.zeros(4, dtype=torch.long))

    model = TinyLM()
    cfg = dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, eval_every=100))  # no periodic checkpoints
    state = fit(model, next_batch, cfg, steps=10, device=torch.device("cpu"), desc="tiny", quiet=True,
                ckpt_path=tmp_path / name)
    return model, state


@pytest.mark.exercise  # fit runs the training step of exercise 6.1
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_stop_signal_in_the_middle_of_a_step_takes_effect_after_it_and_resumes_exactly(tmp_path, signum):
    full_model, full = tiny_fit(tmp_path, "full.pt")
    with like_ctrl_c():  # as the commands do: SIGTERM behaves like Ctrl-C
        with pytest.raises(TrainingInterrupted, match=r"interrupted at tiny step 5; checkpoint saved to .*--resume"):
            tiny_fit(tmp_path, "cut.pt", ctrl_c_at_call=4, signum=signum)  # while drawing the batch of step 4
        assert exit_status() == 128 + signum  # 130 for Ctrl-C, 143 for SIGTERM
    assert load_checkpoint(tmp_path / "cut.pt")["step"] == 5  # step 4 was finished, not half-applied
    model, resumed = tiny_fit(tmp_path, "cut.pt")
    assert resumed.history == full.history
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), full_model.state_dict().values()))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are back
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


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


def interrupt_and_resume(tmp_path: Path, stage: str, seed: int, signum: int = signal.SIGINT,
                         command: tuple[str, ...] = ("train_tiny.py",)) -> str:
    """Uninterrupted and interrupted runs side by side; Ctrl-C (or `signum`) the second in
    `stage`, resume it. Returns the one-line message of the interrupted run."""
    ref = Proc([*command, *TRAIN, f"--out={tmp_path / 'ref'}"], ROOT, tmp_path / "ref.err")
    victim = Proc([*command, *TRAIN, f"--out={tmp_path / 'cut'}"], ROOT, tmp_path / "cut.err")
    victim.wait_for(lambda s: s.startswith(STAGE_LINES[stage]))
    time.sleep(random.Random(seed).uniform(0.05, 0.3))
    victim.signal(signum)
    code, _, message = victim.finish()
    assert code == 128 + signum, message[-2000:]  # 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP
    assert "interrupted" in message and "--resume" in message and "Traceback" not in message, message[-2000:]
    assert not (tmp_path / "cut" / "summary.json").exists()
    saved = re.search(r"interrupted at (.+) step (\d+); checkpoint saved to (.+\.pt)\. Resume", message)
    if saved:  # the signal came during a training loop: that step is checkpointed
        assert load_checkpoint(saved[3])["step"] == int(saved[2]), message
    resumed = Proc([*command, *TRAIN, f"--out={tmp_path / 'cut'}", "--resume"], ROOT, tmp_path / "resume.err")
    code, _, err = resumed.finish()
    assert code == 0, err[-2000:]
    code, _, err = ref.finish()
    assert code == 0, err[-2000:]
    same_run(tmp_path / "ref", tmp_path / "cut")
    return message


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.exercise  # runs the whole model (see tests/test_model.py)
def test_ctrl_c_during_training_then_resume_matches_the_uninterrupted_run(tmp_path):
    interrupt_and_resume(tmp_path, "upstream", seed=0)


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.exercise
def test_sigterm_during_training_checkpoints_exits_143_and_resumes_like_the_uninterrupted_run(tmp_path):
    message = interrupt_and_resume(tmp_path, "upstream", seed=0, signum=signal.SIGTERM)
    assert "checkpoint saved to" in message, message  # the step the signal interrupted


@pytest.mark.slow
@pytest.mark.exercise
@pytest.mark.parametrize("stage, seed", [("pretrain", 1), ("upstream", 2), ("upstream", 3)])
def test_ctrl_c_at_other_moments(tmp_path, stage, seed):
    interrupt_and_resume(tmp_path, stage, seed)


@pytest.mark.slow
@pytest.mark.exercise
@pytest.mark.parametrize("signum, seed", [(signal.SIGTERM, 4), (getattr(signal, "SIGHUP", signal.SIGTERM), 5)],
                         ids=["sigterm", "sighup"])
def test_stop_signals_to_minimoe_train(tmp_path, signum, seed):
    interrupt_and_resume(tmp_path, "pretrain", seed, signum, command=("-m", "minimoe", "train"))


# --- Ctrl-C during reproduce -----------------------------------------------------------------

REPRODUCE = ["-m", "minimoe", "reproduce", "--quick", "--preset=tiny", "--seeds", "0", "--data_seeds", "100",
             "--jobs", "1", "--cells", "dense,learned", "--set", "steps=30", "pretrain_steps=6", "fs_steps=1", "n_upstream=8",
             "n_test=4", "k_per_class=2", "k_other=2", "threads=1"]


def cell(path: Path) -> dict:
    data = json.loads(path.read_text())
    data.pop("seconds"), data.pop("phase_seconds")  # compute time, the one field that may differ
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


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.exercise
def test_ctrl_c_during_reproduce_keeps_finished_cells_and_the_rerun_completes(tmp_path):
    interrupt_reproduce(tmp_path, with_reference=False)


@pytest.mark.slow
@pytest.mark.exercise
def test_ctrl_c_during_reproduce_then_rerun_matches_the_uninterrupted_cells(tmp_path):
    interrupt_reproduce(tmp_path, with_reference=True)


# --- SIGTERM to a parallel reproduce; orphans ------------------------------------------------

needs_proc = pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="finds processes in /proc (Linux)")
TAG = "MINIMOE_TEST_TAG"  # set in a command's environment: it and every process it starts carry it


def _alive(pid: int) -> bool:
    """pid runs (a zombie, dead but not yet reaped by whoever adopted it, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def tagged(tag: str) -> set[int]:
    """Running processes whose environment holds TAG=tag, wherever they were reparented."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"{TAG}={tag}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.add(int(entry.name))
        except OSError:  # gone meanwhile, or another user's
            pass
    return {pid for pid in found if _alive(pid)}


def left_at(deadline: float, running) -> set[int]:
    """What running() still returns at `deadline` (monotonic); empty as soon as it is."""
    while (left := running()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# Two processes: `pretrained` (no upstream training) finishes while `learned` is still training.
REPRODUCE_2 = ["-m", "minimoe", "reproduce", "--quick", "--preset=tiny", "--seeds", "0", "--data_seeds", "100",
               "--jobs", "2", "--cells", "pretrained,learned", "--set", "steps=80", "pretrain_steps=6", "fs_steps=1",
               "n_upstream=8", "n_test=4", "k_per_class=2", "k_other=2", "threads=1"]


@pytest.mark.slow
@pytest.mark.ci
@needs_proc
@pytest.mark.exercise
def test_sigterm_to_reproduce_jobs_2_leaves_no_process_keeps_finished_cells_and_the_rerun_completes(tmp_path):
    out, tag = tmp_path / "cut", f"reproduce-{os.getpid()}-{time.monotonic_ns()}"
    victim = Proc([*REPRODUCE_2, "--out", str(out)], ROOT, tmp_path / "cut.err", env=dict(ENV, **{TAG: tag}))
    finished, training = out / "seed0" / "pretrained.json", out / "seed0" / "work" / "learned" / "learned.pt"
    deadline = time.monotonic() + 300
    while not (finished.is_file() and training.is_file()):  # one cell done, the other past its first checkpoint
        assert victim.proc.poll() is None and time.monotonic() < deadline, victim.finish()[2][-2000:]
        time.sleep(0.02)
    kept, before = finished.read_bytes(), tagged(tag)
    victim.signal(signal.SIGTERM)
    sent = time.monotonic()
    code, _, message = victim.finish()
    assert code == 143, message[-2000:]
    assert "interrupted" in message and "Traceback" not in message, message[-2000:]
    assert len(before - {victim.proc.pid}) >= 2, before  # its two workers were running
    assert not left_at(sent + 10, lambda: tagged(tag)), "processes still running 10 s after SIGTERM"
    assert not (out / "results.json").exists() and not (out / "seed0" / "learned.json").exists()
    code, _, err = Proc([*REPRODUCE_2, "--out", str(out)], ROOT, tmp_path / "rerun.err").finish()
    assert code == 0, err[-2000:]
    assert finished.read_bytes() == kept  # the finished cell was not recomputed
    assert set(json.loads((out / "results.json").read_text())["seen_mean"]) == {"pretrained", "learned"}


ORPHAN = r'''
import os, sys, time
sys.path.insert(0, {root!r})
from minimoe.interrupt import worker_job, worker_pool

def job():
    with worker_job():
        print("worker", os.getpid(), flush=True)
        while True:
            time.sleep(0.05)

if __name__ == "__main__":
    pool = worker_pool(1)
    pool.apply_async(job)
    time.sleep(600)
'''


@needs_proc
def test_a_worker_whose_parent_was_killed_stops_by_itself(tmp_path):
    driver = tmp_path / "orphan.py"
    driver.write_text(ORPHAN.format(root=str(ROOT)))
    parent = Proc([str(driver)], tmp_path, tmp_path / "orphan.err")
    worker = int(parent.wait_for(lambda s: s.startswith("worker")).split()[1])
    parent.signal(signal.SIGKILL)  # no handler runs: the worker must notice by itself
    assert parent.proc.wait(timeout=60) == -signal.SIGKILL
    assert not left_at(time.monotonic() + 10, lambda: {worker} if _alive(worker) else set())


SPAWNER = ("import subprocess, sys, time; "
           "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
           "open(sys.argv[1], 'w').write(f'{child.pid}'); time.sleep(300)")  # a child with a child


@needs_proc
def test_an_interrupted_command_stops_the_subprocesses_its_threads_wait_on_and_theirs(tmp_path):
    """As `minimoe grade`: threads wait on subprocesses (pytest runs, which start more)."""
    from concurrent.futures import ThreadPoolExecutor

    marker = tmp_path / "grandchild.pid"
    with ThreadPoolExecutor(max_workers=1) as pool:
        with pytest.raises(KeyboardInterrupt), children_stopped():
            first = pool.submit(run_child, [sys.executable, "-c", SPAWNER, str(marker)], 300)
            queued = pool.submit(run_child, [sys.executable, "-c", SPAWNER, str(tmp_path / "never")], 300)
            deadline = time.monotonic() + 120
            while not marker.is_file() or not marker.read_text():
                assert time.monotonic() < deadline and not first.done()
                time.sleep(0.02)
            raise KeyboardInterrupt  # Ctrl-C or SIGTERM in the main thread
    assert first.result().returncode == -signal.SIGTERM
    assert isinstance(queued.exception(), KeyboardInterrupt) and not (tmp_path / "never").exists()
    grandchild = int(marker.read_text())
    assert not left_at(time.monotonic() + 10, lambda: {grandchild} if _alive(grandchild) else set())


@needs_proc
def test_sigterm_to_grade_stops_its_pytest_runs_and_exits_143(tmp_path):
    tag = f"grade-{os.getpid()}-{time.monotonic_ns()}"
    victim = Proc(["-m", "minimoe", "grade", "--root", str(ROOT), "--only", "ex1_1", "--json", str(tmp_path / "g.json"),
                   "--csv", str(tmp_path / "g.csv")], tmp_path, tmp_path / "grade.err", env=dict(ENV, **{TAG: tag}))
    deadline = time.monotonic() + 120
    while len(tagged(tag) - {victim.proc.pid}) < 1:  # its pytest run started
        assert victim.proc.poll() is None and time.monotonic() < deadline, victim.finish()[2][-2000:]
        time.sleep(0.02)
    victim.signal(signal.SIGTERM)
    sent = time.monotonic()
    code, _, message = victim.finish()
    assert code == 143 and "interrupted" in message and "Traceback" not in message, message[-2000:]
    assert not left_at(sent + 10, lambda: tagged(tag)), "processes still running 10 s after SIGTERM"
    assert not (tmp_path / "g.json").exists()


# --- the torchrun entry point ----------------------------------------------------------------

DDP = ["--preset=tiny", "--steps=100000", "--threads=1"]  # never finishes on its own


def start_ddp(tmp_path: Path, launcher: list[str], tag: str) -> Proc:
    """minimoe.distributed under `launcher`, once it is training (its run folder exists)."""
    out = tmp_path / "run"
    proc = Proc([*launcher, "-m", "minimoe.distributed", *DDP, f"--out={out}"], ROOT, tmp_path / "ddp.err",
                env=dict(ENV, **{TAG: tag}))
    deadline = time.monotonic() + 120
    while not out.is_dir():
        assert proc.proc.poll() is None and time.monotonic() < deadline, proc.finish()[2][-2000:]
        time.sleep(0.02)
    return proc


@needs_proc
@pytest.mark.exercise
def test_sigterm_to_a_distributed_rank_exits_143_with_one_line(tmp_path):
    rank = start_ddp(tmp_path, [], tag=f"ddp-{os.getpid()}-{time.monotonic_ns()}")
    rank.signal(signal.SIGTERM)
    code, _, message = rank.finish()
    assert code == 143, message[-2000:]
    assert "interrupted: distributed training keeps no checkpoint" in message and "Traceback" not in message, message


@needs_proc
@pytest.mark.slow
@pytest.mark.exercise
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_torchrun_stopped_or_killed_leaves_no_rank_running(tmp_path, signum):
    """SIGTERM: torchrun passes it on to the ranks; SIGKILL: the ranks notice their launcher is gone."""
    from test_distributed import free_port

    tag = f"torchrun-{os.getpid()}-{time.monotonic_ns()}"
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                f"--master_port={free_port()}"]
    run = start_ddp(tmp_path, launcher, tag)
    run.signal(signum)
    sent = time.monotonic()
    run.finish()
    assert not left_at(sent + 10, lambda: tagged(tag)), "ranks still running 10 s after the launcher stopped"
    assert "interrupted: distributed training keeps no checkpoint" in (tmp_path / "ddp.err").read_text()
