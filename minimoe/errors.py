"""minimoe's own error types: every user mistake surfaces as one of these, with the fix.

Each subclasses a builtin (ValueError, FileNotFoundError, RuntimeError) so callers that
already catch those keep working; the CLI catches `MinimoeError` and prints only the message.
"""


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
