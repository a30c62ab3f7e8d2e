"""Checkpoints: atomic writes, safe loads, and a clear error for the wrong config.

- `save_checkpoint` writes to a temporary file in the same directory, flushes it to disk, then
  `os.replace`s it over the old file. A rename is atomic on POSIX, so a crash, Ctrl-C or
  SIGKILL mid-write leaves either the old checkpoint or the new one — never half of one.
- `load_checkpoint` uses `torch.load(weights_only=True)`: only tensors and plain containers are
  unpickled, so a checkpoint carrying arbitrary pickled code is refused.
- The run's config travels inside the checkpoint as JSON; `check_config` compares it with the
  config you are resuming with and names every field that differs.

Read next: `minimoe/train.py`.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from minimoe.config import ANALYSIS_ONLY, Config
from minimoe.errors import CheckpointError


def save_checkpoint(path: str | Path, state: dict[str, Any], config: Config) -> Path:
    """Atomically write `state` (tensors, state dicts, numbers, strings) plus the config."""
    path = Path(path)
    payload = dict(state, config_json=config.to_json())
    try:  # a missing, read-only or full folder fails here, before anything is written
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp")
    except OSError as exc:
        raise CheckpointError(_write_failed(path, exc)) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
    except BaseException as exc:  # also KeyboardInterrupt: never leave the temp file behind
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error(exc) if isinstance(exc, Exception) else None  # Ctrl-C stays Ctrl-C
        if cause is not None:
            raise CheckpointError(_write_failed(path, cause)) from exc
        raise
    return path


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind exc, if any: torch.save reports a full disk as a RuntimeError
    ("unexpected pos ...") raised while handling the OSError of the failed write."""
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    return exc


def _write_failed(path: Path, exc: OSError) -> str:
    return (f"could not write checkpoint {path}: {exc}. The previous checkpoint (if any) is "
            "intact; free disk space or choose another --out.")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (weights_only=True). Returns the dict saved, with `config`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; check the path or train first.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"refused to load {path}: it contains objects other than tensors "
                              f"and plain containers, which could run code when unpickled "
                              f"(weights_only=True). Only load checkpoints you trust; minimoe "
                              f"never writes such objects. Detail: {str(exc)[:200]}") from exc
    except MemoryError:  # not the file's fault: deleting it would be the wrong advice
        raise
    except Exception as exc:  # noqa: BLE001 — damaged bytes surface as RuntimeError, EOFError,
        # OSError, but also KeyError, IndexError or UnicodeDecodeError from deep inside the unpickler
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: "
                              f"{str(exc)[:200]}); delete it and resume from an earlier one, or "
                              "retrain.") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("config_json"), str):
        raise CheckpointError(f"{path} is not a minimoe checkpoint (no config inside); point "
                              "--out at a run directory written by minimoe, or move the file away.")
    try:
        payload["config"] = Config.from_dict(json.loads(payload.pop("config_json")))
    except (ValueError, TypeError) as exc:  # ConfigError is a ValueError, and so is bad JSON
        raise CheckpointError(f"{path} holds a config this version of minimoe cannot read ({exc}); "
                              "it was written by another version: retrain, or load it with that "
                              "version.") from exc
    return payload


def check_config(saved: Config, current: Config, ignore: tuple[str, ...] = ("train",)) -> None:
    """Raise CheckpointError naming every differing field outside the `ignore`d sections
    (fields in config.ANALYSIS_ONLY, such as the ontology, never make weights incompatible)."""
    a, b = saved.to_dict(), current.to_dict()
    diffs = [f"{sec}.{k}: checkpoint {a[sec][k]!r} vs now {b[sec][k]!r}" for sec in a if sec not in ignore
             for k in a[sec] if k not in ANALYSIS_ONLY and a[sec][k] != b[sec].get(k)]
    if diffs:
        raise CheckpointError("checkpoint was made with another config — " + "; ".join(diffs)
                              + ". Resume with the same settings, or start a new --out.")


# Run-control fields that never change a cell's numbers (a rerun may change them freely).
RUN_CONTROL = ("threads", "device", "out", "compile", "fs_batched")  # fs_batched: equal within float tolerance


def science(config: dict) -> dict:
    """A config dict without its run-control and analysis-only fields (config.ANALYSIS_ONLY: an
    ontology added later reuses the cells); fields added to Config after a cell was saved read as
    their defaults (a new field's default keeps the behaviour it had before). Two cells, or two
    study folders, with equal `science` computed the same thing."""
    full = Config.from_dict(config).to_dict()
    return {sec: {k: v for k, v in vals.items() if k not in RUN_CONTROL + ANALYSIS_ONLY} for sec, vals in full.items()}


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str = "") -> None:
    """load_state_dict, turning torch's shape/key errors into one readable CheckpointError."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"missing {missing[:5]}" * bool(missing), f"unexpected {unexpected[:5]}" * bool(unexpected),
                 f"shape mismatch {shapes[:5]}" * bool(shapes)]
        raise CheckpointError(f"checkpoint {path} does not fit this model ("
                              + "; ".join(p for p in parts if p)
                              + "). It was made with another model config; use the same preset "
                              "and overrides as the run that wrote it.")
    model.load_state_dict(state)
