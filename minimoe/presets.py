"""Presets: named Configs, each override with the reason it was chosen (measured where it says so).

- `tiny`: for tests, a model that runs a forward pass in milliseconds;
- `small`: for `train_tiny.py`, the whole pipeline in about two minutes on 2 CPU cores;
- `repro`: for `minimoe reproduce`, `small` with fewer steps so that every cell and seed fits.

`train_tiny.py`, `minimoe train` and `minimoe reproduce` start from a preset (`--preset`) and
apply `--field=value` overrides on top. Read next: `minimoe/overrides.py`.
"""

from __future__ import annotations

from minimoe.config import Config, DataConfig, ModelConfig, RouterConfig, TrainConfig
from minimoe.errors import ConfigError, nearest
from minimoe.overrides import apply_overrides


PRESETS: dict[str, Config] = {
    # For tests: a model that runs a forward pass in milliseconds.
    "tiny": Config(
        model=ModelConfig(d_model=32, n_heads=2, d_ff=64, n_enc_layers=1, n_dec_layers=1, max_len=48),
        router=RouterConfig(d_task=16, d_router_hidden=16),
        data=DataConfig(n_entities=16, n_upstream=64, n_test=32),
        train=TrainConfig(steps=20, pretrain_steps=10, batch_size=16, eval_every=10, out="runs/test"),
    ),
    # For train_tiny.py: the whole pipeline in about two minutes on 2 CPU cores. Reasons:
    # - lr 3e-3 and 1,500 steps: at lr 1e-3 / 600 steps seen-task accuracy was 0.34 (measured);
    # - softmax routing: it learned faster (seen 0.88 vs 0.71 for straight-through Gumbel at the
    #   same steps) and its routes grouped tasks by skill (permutation p 0.002), as small prototypes do;
    # - threads 1: at d 64 a second thread gains little, and on a busy 2-core machine 2-thread
    #   steps slowed 10–100× (OpenMP threads spinning against other processes).
    # - few-shot: one lr, 40 steps, so that 21 unseen tasks fit in the budget.
    "small": Config(
        router=RouterConfig(selection="softmax"),
        train=TrainConfig(lr=3e-3, steps=1500, pretrain_steps=300, eval_every=150, fs_steps=40,
                          fs_lrs="1e-3"),
    ),
}
# For `minimoe reproduce`: 9 cells × 3 upstream seeds × 21 unseen tasks × 5 data seeds must fit in
# about 45 minutes on 2 cores (2 processes), so upstream steps and few-shot steps are cut
# (measured: the `small` budget needed ~50 min per seed on a busy machine; this one 26.5 min for
# 3 seeds). The price: at 800 steps the methods are still learning (dense seen 0.74); they level
# off by 2,400 (`--set steps=2400`, about an hour per 3 seeds here: lessons/results/plateau/).
PRESETS["repro"] = apply_overrides(PRESETS["small"], {"steps": 800, "fs_steps": 25, "eval_every": 100})


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'{nearest(name, PRESETS)}")
    return PRESETS[name]
