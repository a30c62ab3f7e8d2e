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
    # For train_tiny.py: the whole pipeline in about two minutes on 2 CPU cores (the
    # measurements behind each choice: lesson 06, "The small preset"). Reasons:
    # - lr 3e-3 and 1,500 steps: a lower rate or fewer steps leaves seen tasks unlearned;
    # - softmax routing: at these steps it learns faster than straight-through Gumbel and its
    #   routes group tasks by skill;
    # - threads 1: at d 64 a second thread gains little and contends with other processes;
    # - few-shot: one lr, 40 steps, so that 21 unseen tasks fit in the budget.
    "small": Config(
        router=RouterConfig(selection="softmax"),
        train=TrainConfig(lr=3e-3, steps=1500, pretrain_steps=300, eval_every=150, fs_steps=40,
                          fs_lrs="1e-3"),
    ),
}
# For `minimoe reproduce`: 9 cells × 3 upstream seeds × 21 unseen tasks × 5 data seeds must fit in
# about 45 minutes on 2 cores (2 processes), so upstream and few-shot steps are cut. The price:
# at 800 steps the methods are still learning; they level off by 2,400 (`--set steps=2400`;
# about an hour per 3 seeds on 2 cores: lessons/results/plateau/).
PRESETS["repro"] = apply_overrides(PRESETS["small"], {"steps": 800, "fs_steps": 25, "eval_every": 100})


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'{nearest(name, PRESETS)}")
    return PRESETS[name]
