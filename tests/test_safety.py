"""Safety: untrusted checkpoints, the network, and paths that try to leave their folder.

- A checkpoint carrying a pickled payload (code that would run when unpickled) is refused with
  a clear CheckpointError — `torch.load(weights_only=True)` — and the payload never runs, also
  when it sits in a run folder that `--resume` picks up.
- minimoe never reaches the network: no network module is imported anywhere in the package,
  and a whole tiny pipeline plus a CrossFit export/load runs with every socket call blocked.
- File paths from task files and configs cannot write outside the chosen output folder: task
  names such as "../evil" or "/tmp/x" in tasks.json, a split file or a suite are refused before
  anything is written; make-student refuses destinations inside the project (symlinks
  resolved); a run writes only under its --out.

Run: python -m pytest tests/test_safety.py -q     (~5 s: one tiny in-process run)
"""

import ast
import dataclasses
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from minimoe.checkpoint import load_checkpoint
from minimoe.classroom import make_student
from minimoe.crossfit import export_suite, write_task_file
from minimoe.crossfit_suite import load_crossfit_dir
from minimoe.errors import CheckpointError, DataError
from minimoe.exercises import ExerciseError
from minimoe.presets import PRESETS, apply_overrides
from minimoe.runner import run
from minimoe.suite import FEW_SHOT_SEEDS, build_suite
from minimoe.tasks import Example

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minimoe"
TINY = PRESETS["tiny"]


# --- pickled payloads ------------------------------------------------------------------------

class Payload:
    """Unpickling this object calls open(canary, "w"): proof that code ran."""

    def __init__(self, canary: Path):
        self.canary = str(canary)

    def __reduce__(self):
        return (open, (self.canary, "w"))


def poisoned(path: Path, canary: Path, where: str) -> Path:
    state = {"config_json": TINY.to_json(), "step": 1, "model": {"w": torch.ones(2)}}
    if where == "top":
        state["extra"] = Payload(canary)
    elif where == "nested":
        state["model"]["w"] = [torch.ones(2), {"deep": Payload(canary)}]
    else:  # an innocent-looking numpy array: also outside what weights_only allows
        state["rng_numpy"] = np.arange(3)
    torch.save(state, path)
    return path


@pytest.mark.parametrize("where", ["top", "nested", "numpy"])
def test_checkpoint_with_a_pickled_payload_is_refused_and_never_runs(tmp_path, where):
    canary = tmp_path / "pwned"
    path = poisoned(tmp_path / "c.pt", canary, where)
    with pytest.raises(CheckpointError, match=r"refused to load .*weights_only=True.*Only load checkpoints you trust"):
        load_checkpoint(path)
    assert not canary.exists()
    if where != "numpy":  # the payload is live: an unsafe load would have run it
        torch.load(path, weights_only=False)
        assert canary.exists()


def test_every_torch_load_in_the_package_is_weights_only():
    calls = [(p.name, node.lineno, {k.arg: getattr(k.value, "value", None) for k in node.keywords})
             for p in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
             if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "load")]
    assert calls, "no torch.load found: the scan is broken"
    assert all(kw.get("weights_only") is True for _, _, kw in calls), calls


def test_resume_refuses_a_poisoned_checkpoint_in_the_run_folder(tmp_path):
    cfg = apply_overrides(TINY, {"out": str(tmp_path / "run"), "steps": 2, "pretrain_steps": 2})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(cfg.to_json())
    canary = tmp_path / "pwned"
    poisoned(tmp_path / "run" / "pretrain.pt", canary, "top")
    with pytest.raises(CheckpointError, match="refused to load"):
        run(cfg, resume=True, quiet=True, log=lambda *a: None)
    assert not canary.exists()


# --- the network -----------------------------------------------------------------------------

NETWORK_MODULES = {"socket", "ssl", "urllib", "urllib3", "http", "requests", "httpx", "aiohttp", "ftplib",
                   "smtplib", "telnetlib", "xmlrpc", "websocket", "websockets", "huggingface_hub", "datasets",
                   "wandb", "boto3"}
NETWORK_CALLS = {"urlopen", "load_state_dict_from_url", "download_url_to_file", "hf_hub_download", "snapshot_download"}


def test_no_module_of_the_package_imports_or_calls_the_network():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}:{node.lineno} import {n}" for n in names if n.split(".")[0] in NETWORK_MODULES]
            if isinstance(node, ast.Attribute) and node.attr in NETWORK_CALLS | {"hub"}:
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.Name) and node.id in NETWORK_CALLS:
                found.append(f"{path.name}:{node.lineno} {node.id}")
    assert not found, found


@pytest.fixture
def no_network(monkeypatch):
    """Every way to open a connection or resolve a name raises, and is recorded."""
    attempts = []

    def refuse(what):
        def call(*args, **kwargs):
            attempts.append((what, args[:2]))
            raise OSError(f"network access attempted in a test: {what}{args[:2]}")
        return call

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            refuse("socket.socket")(*args)

    monkeypatch.setattr(socket, "socket", NoSocket)
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "socketpair"):
        monkeypatch.setattr(socket, name, refuse(f"socket.{name}"))
    return attempts


@pytest.mark.exercise  # runs the whole model (see tests/test_model.py)
def test_a_whole_run_and_a_crossfit_round_trip_never_touch_the_network_nor_leave_their_folder(
        tmp_path, monkeypatch, no_network):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # anything written to a relative path would land here
    out = tmp_path / "out"
    cfg = apply_overrides(TINY, {"out": str(out / "run"), "steps": 6, "pretrain_steps": 4, "eval_every": 3,
                                 "fs_steps": 1, "fs_lrs": "1e-3", "n_upstream": 8, "n_test": 4,
                                 "k_per_class": 2, "k_other": 2, "threads": 1})
    summary = run(cfg, quiet=True, log=lambda *a: None)
    assert 0.0 <= summary["seen_mean"] <= 1.0
    export_suite(build_suite(cfg.data), out / "export")
    assert len(load_crossfit_dir(out / "export").tasks) == len(build_suite(cfg.data).tasks)
    assert no_network == []
    assert list(cwd.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "out"]


# --- paths that try to leave their folder ----------------------------------------------------

def crossfit_folder(root: Path) -> Path:
    ex = [Example(f"input {i}", ("yes" if i % 2 else "no",)) for i in range(4)]
    for split in ("train", "dev"):
        write_task_file(root / "alpha" / f"alpha_upstream_{split}.tsv", ex)
    for seed in FEW_SHOT_SEEDS:
        for split in ("train", "dev", "test"):
            write_task_file(root / "beta" / f"beta_4_{seed}_{split}.tsv", ex)
    return root


BAD_NAMES = ["../evil", "..", ".", "/tmp/minimoe-abs", "a/b", "alpha/../../evil", ".hidden", "", "x\x00y", 7]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_task_names_that_are_paths_are_refused_in_tasks_json_and_split_files(tmp_path, name):
    root = crossfit_folder(tmp_path / "data")
    tasks = [{"name": n, "seen": n == "alpha", "category": "c", "skill": "s", "instruction": "i"}
             for n in ("alpha", "beta")] + [{"name": name, "seen": False, "category": "c", "skill": "s",
                                             "instruction": "i"}]
    (root / "tasks.json").write_text(json.dumps({"tasks": tasks}))
    with pytest.raises(DataError, match="not plain folder names|malformed"):
        load_crossfit_dir(root)
    (root / "tasks.json").unlink()
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["alpha"], "test": ["beta", name]}))
    with pytest.raises(DataError, match="not plain folder names"):
        load_crossfit_dir(root, split_file=split)


@pytest.mark.parametrize("name", ["../evil", "/tmp/minimoe-abs-export", "sub/dir"])
def test_export_refuses_path_task_names_before_writing_anything(tmp_path, name):
    suite = build_suite(TINY.data)
    suite.tasks[-1] = dataclasses.replace(suite.tasks[-1], name=name)  # e.g. a hand-made suite
    out = tmp_path / "nest" / "export"
    with pytest.raises(DataError, match="not plain folder names"):
        export_suite(suite, out)
    assert not out.exists() and sorted(p.name for p in tmp_path.rglob("*")) == []
    assert not Path("/tmp/minimoe-abs-export").exists()


@pytest.fixture
def tiny_project(tmp_path) -> Path:
    """A minimal project with one exercise, so that a wrong refusal cannot damage the real one."""
    src = tmp_path / "src"
    (src / "minimoe").mkdir(parents=True)
    (src / "minimoe" / "f.py").write_text("def f():\n    # BEGIN EXERCISE 1.1: one\n    return 1\n"
                                          "    # END EXERCISE 1.1\n")
    for folder in ("lessons", "tests"):
        (src / folder).mkdir()
        (src / folder / "keep.txt").write_text("original")
    return src


def test_make_student_refuses_destinations_inside_the_project_even_through_symlinks(tiny_project, tmp_path):
    before = {p: p.read_bytes() for p in tiny_project.rglob("*") if p.is_file()}
    link = tmp_path / "innocent-looking"
    link.symlink_to(tiny_project / "lessons")
    for out, message in [(tiny_project, "would overwrite the reference"),
                         (tiny_project / "minimoe" / "copy", "would overwrite the reference"),
                         (tiny_project / "tests" / "student", "lies inside"),
                         (link / "student", "lies inside"),
                         (tiny_project / "lessons" / ".." / "minimoe" / "x", "would overwrite the reference")]:
        with pytest.raises(ExerciseError, match=message):
            make_student(tiny_project, out)
    after = {p: p.read_bytes() for p in tiny_project.rglob("*") if p.is_file()}
    assert after == before


def test_make_student_writes_only_inside_its_destination(tiny_project, tmp_path):
    out = tmp_path / "student"
    make_student(tiny_project, out)
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - {p for p in tiny_project.rglob("*") if p.is_file()}
    assert written and all(out in p.parents for p in written)
    assert "NotImplementedError(\"exercise 1.1\")" in (out / "minimoe" / "f.py").read_text()
    assert os.path.realpath(out) == str(out.resolve())
