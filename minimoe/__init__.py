"""minimoe — task-level mixture-of-experts transformers, from scratch, for reading.

Implements Ye, Zha & Ren, "Eliciting and Understanding Cross-Task Skills with Task-Level
Mixture-of-Experts" (Findings of EMNLP 2022) at laptop scale. Start with `lessons/README.md`.

Axis legend (used in every einops pattern, docstring, lesson and test):

    b  batch (examples)          t  target length (decoder)     s  source length (encoder)
    d  model width               h  attention heads             k  head width (d = h·k)
    f  feed-forward width        e  experts in one pool         l  routed layer positions
    v  vocabulary                n  tasks                       r  router hidden width

Import order, by tier: a module imports only from its own tier or an earlier one, never upwards
and never in a cycle (tests/test_imports.py checks both, imports inside functions included):

    1 basics:   errors values config presets device interrupt exercises vocab archive phases
    2 model:    layers grouped experts fastpool router token_router model upcycle flops memory
    3 data:     knowledge tasks interference suite crossfit crossfit_suite batching
    4 training: checkpoint train snapshots metrics evaluate batched fisher pipeline
    5 analysis: analysis permutation endpoints figures report routes repro_report verdicts
                bench_report bench_models bench
    6 commands: runner reproduce reproduce_cli bench_study distributed grading classroom cli __main__
"""

__version__ = "0.1.0"

from minimoe.errors import MinimoeError, ConfigError, DataError, CheckpointError, DeviceError

__all__ = ["MinimoeError", "ConfigError", "DataError", "CheckpointError", "DeviceError", "__version__"]
