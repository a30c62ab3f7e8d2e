"""How a minimoe process stops when asked to: Ctrl-C, SIGTERM, SIGHUP, or a parent that vanished.

One mechanism for all of them: a stop signal becomes a `KeyboardInterrupt`, as Ctrl-C already
is in Python, so every `except KeyboardInterrupt` (checkpoint, keep finished cells, one-line
message) serves SIGTERM (SLURM preemption, `docker stop`, systemd) and SIGHUP (a closed
terminal or ssh session) too.

- `like_ctrl_c()`: around a command (cli.py, train_tiny.py, distributed.py): SIGTERM and SIGHUP
  raise KeyboardInterrupt; `report(err, hint)` prints the one line and returns the exit status
  a shell shows for that signal (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
- `until_step_end()`: around a training loop (train.fit): a stop signal takes effect after the
  current step, so the checkpoint holds a whole step; a second one stops at once.
- `worker_pool(jobs)` / `worker_job()`: processes of `minimoe reproduce`. The parent decides:
  workers ignore Ctrl-C (a terminal sends it to them too) and stop when the parent, leaving its
  `with Pool` on any path (done, error, Ctrl-C, SIGTERM), terminates them with SIGTERM; inside a
  job they checkpoint the current step first. A worker whose parent was killed outright
  (SIGKILL, out of memory) notices and stops itself the same way (`watch_parent`).
- `run_child(args)` / `children_stopped()`: subprocesses waited on by threads (`minimoe grade`
  runs pytest in them): leaving the block by an exception stops each child and everything it
  started, so the threads, and then the command, can end.

A signal that is ignored or handled by someone else (`nohup` ignores SIGHUP) is left alone.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import multiprocessing.util
import os
import signal
import subprocess
import sys
import threading
import time

from tqdm import tqdm

# SIGHUP does not exist on Windows.
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s)
_received: list[int] = []  # the first stop signal of this process: it sets the exit status
PARENT_POLL_SECONDS = 1.0


def _note(signum: int) -> None:
    if not _received:
        _received.append(signum)


def _interrupt(signum, frame):
    """SIGTERM/SIGHUP as Ctrl-C: Python's default SIGINT handler raises KeyboardInterrupt too."""
    _note(signum)
    raise KeyboardInterrupt


def _exit(signum, frame):
    """An idle worker has nothing to save: exit at once, but through Python, so the pool's
    locks and semaphores are released (a signal's default action would leak them)."""
    _ignore_stop_signals()
    _leave_quickly()
    raise SystemExit(128 + signum)


def _leave_quickly() -> None:
    """Skip the interpreter's last garbage collection, which takes seconds in a process that
    used torch on a busy machine (a scheduler's grace period is short: docker stop waits 10 s);
    the memory is returned with the process anyway."""
    gc.freeze()


def _ignore_stop_signals() -> None:
    """For a worker on its way out: a late SIGTERM (Pool.terminate sends one to a worker that
    is already exiting) must not raise inside the interpreter's exit handlers."""
    for signum in STOP_SIGNALS[1:]:
        signal.signal(signum, signal.SIG_IGN)


def exit_status() -> int:
    """128 + the first stop signal this process received (130 when it was Ctrl-C or none)."""
    return 128 + (_received[0] if _received else signal.SIGINT)


def _set_handlers(handler, signums, only_if=(signal.SIG_DFL,)) -> dict:
    """Install `handler` for each of `signums` whose current handler is in `only_if`; returns
    the replaced handlers. Only the main thread may set handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, handler) for s in signums if signal.getsignal(s) in only_if}


def _restore(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@contextlib.contextmanager
def like_ctrl_c():
    """While the block runs, SIGTERM and SIGHUP raise KeyboardInterrupt like Ctrl-C."""
    _received.clear()
    previous = _set_handlers(_interrupt, STOP_SIGNALS[1:])
    try:
        yield
    finally:
        _restore(previous)


def report(err: KeyboardInterrupt, hint: str) -> int:
    """The one line of an interrupted command on stderr (the exception's message, else `hint`);
    returns the exit status. str(err): an exception object is truthy even with no message."""
    print(f"interrupted: {str(err) or hint}", file=sys.stderr)
    return exit_status()


@contextlib.contextmanager
def until_step_end():
    """Defer stop signals to the end of the current step; yields a list that is non-empty once
    one arrived. Why: an interrupt inside a step would checkpoint a half-applied optimizer
    update and data/route RNGs already advanced past the step's batch, so the resumed run would
    differ from the uninterrupted one. Only signals that would raise KeyboardInterrupt are
    deferred; an ignored one stays ignored."""
    pressed: list[int] = []

    def defer(signum, frame):
        if pressed:  # a second signal: stop now
            raise KeyboardInterrupt
        _note(signum)
        pressed.append(signum)

    previous = _set_handlers(defer, STOP_SIGNALS, only_if=(signal.default_int_handler, _interrupt))
    try:
        yield pressed
    finally:
        _restore(previous)


def worker_pool(jobs: int):
    """A pool of `jobs` spawned worker processes that never outlive this one (module docstring).
    Use it as `with worker_pool(n) as pool:` and run each job inside `worker_job()`."""
    return multiprocessing.get_context("spawn").Pool(jobs, initializer=_worker_init, initargs=(os.getpid(),))


def _worker_init(parent: int) -> None:
    _received.clear()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole terminal's group; the parent decides
    _set_handlers(_exit, STOP_SIGNALS[1:])  # a SIGHUP ignored by nohup stays ignored
    # Runs first when the worker leaves its loop, on every path (multiprocessing's exit hooks).
    multiprocessing.util.Finalize(None, _ignore_stop_signals, exitpriority=100)
    watch_parent(parent)
    # The worker's (silent) progress bars lock with a thread lock, not a process semaphore, so a
    # worker stopped early leaves nothing for the resource tracker to warn about.
    tqdm.set_lock(threading.RLock())


def watch_parent(parent: int) -> None:
    """From now on, SIGTERM to this process once `parent` (a pid) is gone: then this process
    stops as if its parent had stopped it. Also for torchrun's ranks (minimoe/distributed.py)."""
    threading.Thread(target=_poll_parent, args=(parent,), daemon=True, name="watch-parent").start()


def _poll_parent(parent: int) -> None:
    """SIGTERM to this process once `parent` is gone (the process is then adopted by another).

    Why polling os.getppid() and not Linux's prctl(PR_SET_PDEATHSIG): it works on every POSIX
    system; it goes through the same SIGTERM path as a stop by the parent (checkpoint, then
    exit); and PDEATHSIG fires when the *thread* that started the worker ends, and a Pool
    starts replacement workers from a helper thread. Comparing with the pid the parent passed
    also catches a parent that died before this thread started. One system call a second is
    free. (On Windows the parent id never changes, so this watch never fires there.)"""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def worker_job():
    """Inside a pool job: SIGTERM/SIGHUP raise KeyboardInterrupt, so training checkpoints the
    current step (`until_step_end`); then the worker exits quietly with the signal's status
    (no traceback: the parent prints the one line)."""
    previous = _set_handlers(_interrupt, STOP_SIGNALS[1:], only_if=(_exit,))
    try:
        yield
    except KeyboardInterrupt:
        _leave_quickly()
        raise SystemExit(exit_status()) from None
    finally:
        _restore(previous)


_children: set[subprocess.Popen] = set()  # started by run_child and not yet waited for
_children_lock = threading.Lock()
_stopping = threading.Event()


def run_child(args: list[str], timeout: float | None = None, **popen) -> subprocess.CompletedProcess:
    """`subprocess.run(args, timeout=timeout, **popen)`, in a process group of its own so that
    stopping it (timeout, `children_stopped`) also stops the processes it started."""
    with _children_lock:
        if _stopping.is_set():
            raise KeyboardInterrupt  # the command is stopping: start nothing new
        proc = subprocess.Popen(args, start_new_session=True, **popen)
        _children.add(proc)
    try:
        with proc:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, hard=True)
                raise
    finally:
        with _children_lock:
            _children.discard(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@contextlib.contextmanager
def children_stopped():
    """Leaving the block by an exception (Ctrl-C, SIGTERM, an error) sends SIGTERM to every
    `run_child` process group in flight, and later `run_child` calls start nothing."""
    _stopping.clear()
    try:
        yield
    except BaseException:
        with _children_lock:
            _stopping.set()
            for proc in _children:
                _signal_group(proc, hard=False)
        raise


def _signal_group(proc: subprocess.Popen, hard: bool) -> None:
    try:
        if hasattr(os, "killpg"):  # POSIX: the child's whole group (its pid is the group id)
            os.killpg(proc.pid, signal.SIGKILL if hard else signal.SIGTERM)
        else:
            proc.kill() if hard else proc.terminate()
    except ProcessLookupError:  # already gone
        pass
