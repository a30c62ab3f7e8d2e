"""minimoe — task-level mixture-of-experts transformers, from scratch, for reading.

Implements Ye, Zha & Ren, "Eliciting and Understanding Cross-Task Skills with Task-Level
Mixture-of-Experts" (Findings of EMNLP 2022) at laptop scale. Start with `lessons/README.md`.

Axis legend (used in every einops pattern, docstring, lesson and test):

    b  batch (examples)          t  target length (decoder)     s  source length (encoder)
    d  model width               h  attention heads             k  head width (d = h·k)
    f  feed-forward width        e  experts in one pool         l  routed layer positions
    v  vocabulary                n  tasks                       r  router hidden width

Import direction (never upwards): config (values → config → overrides → presets) → layers →
grouped → experts/router → model → tasks → train/metrics → analysis → figures → cli.
"""

__version__ = "0.1.0"

from minimoe.errors import MinimoeError, ConfigError, DataError, CheckpointError, DeviceError

__all__ = ["MinimoeError", "ConfigError", "DataError", "CheckpointError", "DeviceError", "__version__"]
