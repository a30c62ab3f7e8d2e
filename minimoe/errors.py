"""minimoe's own error types: every user mistake surfaces as one of these, with the fix.

Each subclasses a builtin (ValueError, FileNotFoundError, RuntimeError) so callers that
already catch those keep working; the CLI catches `MinimoeError` and prints only the message.
`nearest` writes the "did you mean" hint that every unknown-name message ends with; `Parser` is
the argparse every command uses, so a mistyped flag gets one such line too.
"""

import argparse
import difflib


class MinimoeError(Exception):
    """Base class: a user-facing problem whose message names the problem and the fix."""


class ConfigError(MinimoeError, ValueError):
    """An unknown config key, a bad value or an invalid combination of values."""


class DataError(MinimoeError, ValueError):
    """A malformed task file, an unknown task name or a data directory with missing splits."""


class CheckpointError(MinimoeError, RuntimeError):
    """A checkpoint that is missing, corrupt, unsafe, or from another configuration."""


class DeviceError(MinimoeError, RuntimeError):
    """A device that was asked for but is not available (e.g. --device cuda without CUDA)."""


def nearest(key: str, valid) -> str:
    """'; did you mean X?' for the closest valid name, else the list of valid names (shared by
    every lookup in minimoe)."""
    names = sorted(set(valid))
    near = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    return f"; did you mean '{near[0]}'?" if near else f"; valid keys: {', '.join(names)}."


class Parser(argparse.ArgumentParser):
    """argparse in minimoe's error style: one line `error: ...` (no usage dump above it), the
    nearest option for a mistyped one, and no abbreviations (`--n_expert` is a typo, not
    `--n_experts`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        if message.startswith("unrecognized arguments:"):
            names = [o[2:] for a in self._actions for o in a.option_strings if o.startswith("--")]
            flags = [w for w in message.split(":", 1)[1].split() if w.startswith("--")]
            message += "".join(nearest(f[2:].split("=", 1)[0], names) for f in flags[:1])
        self.exit(2, f"error: {message} ({self.prog} --help lists every option)\n")
