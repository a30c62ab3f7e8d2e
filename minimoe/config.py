"""Configuration: the four frozen dataclass sections of a run, and `Config`, which groups them.

Four sections — `ModelConfig`, `RouterConfig`, `DataConfig`, `TrainConfig` — grouped in one
`Config`. Every field name is unique across sections, so the command line can say
`--d_model=128` without naming the section (`--model.d_model=128` also works; see
`minimoe/presets.py::apply_overrides`). Validation lives in `__post_init__` and raises
`ConfigError` (a `ValueError`) that names the field and the fix (`minimoe/values.py::check`).
`Config.to_json` / `read_config` are the `config.json` of a run directory. Read next:
`minimoe/presets.py` (tiny, small, repro with the reason for each override; `--field=value`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from minimoe.errors import ConfigError
from minimoe.values import check, choice, section_values

# How a router's logits become gates (`minimoe/router.py::select_routes`; a new mode goes in both).
SELECTIONS = ("softmax", "gumbel", "st_gumbel")


@dataclass(frozen=True)
class ModelConfig:
    """The encoder–decoder transformer and its expert pools (paper: BART-base, 3 experts)."""

    vocab_size: int = 0  # 0 = "take it from the tokenizer"; filled in by the data pipeline
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 256
    n_enc_layers: int = 2
    n_dec_layers: int = 2
    max_len: int = 64  # longest source or target sequence, in tokens
    dropout: float = 0.0  # tiny models on tiny data overfit less than they underfit
    pos_emb: str = "learned"  # learned | sinusoidal
    init_std: float = 0.1  # token AND position embeddings; 0.02 (BART) stalls tiny models: the position signal drowns
    n_experts: int = 3  # experts per routed position; 1 = a dense model
    routed: str = "all"  # which positions hold expert pools: all | encoder | decoder | none
    expert_kind: str = "layer"  # layer = whole transformer layer (paper) | ffn = only the FFN
    fused_attention: str = "auto"  # auto (SDPA where faster: layers.FUSED_AUTO_DEVICES) | on | off (explicit einops)
    upcycle_noise: float = 1e-2  # noise std on expert copies; paper 1e-8 vanishes in fp32 (1 + 1e-8 == 1)

    def __post_init__(self) -> None:
        for name in ("d_model", "n_heads", "d_ff", "max_len", "n_experts"):
            check(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1.")
        check(self.vocab_size >= 0, f"vocab_size={self.vocab_size} must be >= 0 (0 = from the tokenizer).")
        check(self.n_enc_layers >= 1 and self.n_dec_layers >= 1,
              "n_enc_layers and n_dec_layers must both be >= 1 (an encoder–decoder needs both).")
        check(self.d_model % self.n_heads == 0,
              f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
              f"choose n_heads among {[h for h in range(1, 17) if self.d_model % h == 0]}.")
        check(0.0 <= self.dropout < 1.0, f"dropout={self.dropout} must be in [0, 1).")
        check(self.init_std > 0, f"init_std={self.init_std} must be > 0.")
        check(self.upcycle_noise >= 0, f"upcycle_noise={self.upcycle_noise} must be >= 0.")
        choice("pos_emb", self.pos_emb, ("learned", "sinusoidal"))
        choice("routed", self.routed, ("all", "encoder", "decoder", "none"))
        choice("expert_kind", self.expert_kind, ("layer", "ffn"))
        choice("fused_attention", self.fused_attention, ("auto", "on", "off"))

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class RouterConfig:
    """How tasks pick experts (paper §3: an MLP per layer over a task vector)."""

    routing: str = "learned"  # learned | average | random | dense | oracle (by task group) (the method)
    task_repr: str = "learned"  # learned (embedding per seen task) | instruction | examples | fisher (few-shot only)
    selection: str = "st_gumbel"  # softmax | gumbel | st_gumbel (straight-through hard Gumbel)
    st_mode: str = "selected"  # selected (cheap: only the chosen expert runs) | full (exact, m× cost)
    d_task: int = 64  # width of a learned task embedding, or of a Fisher vector (PCA components)
    d_router_hidden: int = 64  # paper: 64
    tau0: float = 2.0  # paper: 2.0
    tau_min: float = 0.1  # paper: 0.1
    tau_decay: float = -1.0  # per step; paper 3e-4 (30k steps); -1 = auto: reach tau_min at 70 % of the steps
    route_seed: int = 0  # seed of the fixed table used by random task-level routing
    random_top_k: int = 1  # random task-level routing picks this many experts per layer
    two_stage: bool = False  # paper's final recipe: re-init experts, freeze router, anneal τ
    stage2_tau0: float = 300.0  # τ at the start of stage 2: near average routing (paper: 300)
    stage2_tau_end: float = 1.0  # τ at the end of stage 2 (paper: 1; stage 1 ends at tau_min)
    stage1_frac: float = 1 / 3  # share of `steps` for stage 1, the rest is stage 2 (paper: 30k + 60k)
    two_stage_budget: str = "shared"  # shared = both stages in `steps` | each = `steps` per stage (2×)
    # Token-level routing (minimoe/token_router.py): the comparison of lesson 09, not the paper.
    router_kind: str = "task"  # task (one route per task, the paper) | token (top-k FFN experts per token)
    token_top_k: int = 1  # token routing: experts per token (1 = Switch, 2 = GShard)
    aux_loss_weight: float = 1e-2  # token routing: load-balancing loss weight (Switch: 1e-2)
    z_loss_weight: float = 1e-3  # token routing: router z-loss weight (ST-MoE: 1e-3)

    def __post_init__(self) -> None:
        choice("routing", self.routing, ("learned", "average", "random", "dense", "oracle"))
        choice("task_repr", self.task_repr, ("learned", "instruction", "examples", "fisher"))
        choice("selection", self.selection, SELECTIONS)
        choice("st_mode", self.st_mode, ("selected", "full"))
        check(self.d_task >= 1 and self.d_router_hidden >= 1, "d_task and d_router_hidden must be >= 1.")
        check(self.tau0 > 0, f"tau0={self.tau0} must be > 0 (a temperature divides the logits).")
        check(self.tau_min > 0, f"tau_min={self.tau_min} must be > 0 (a temperature divides the logits).")
        check(self.tau_min <= self.tau0, f"tau_min={self.tau_min} must be <= tau0={self.tau0}.")
        check(self.tau_decay >= 0 or self.tau_decay == -1,
              f"tau_decay={self.tau_decay} must be >= 0, or -1 for 'reach tau_min at 70 % of the steps'.")
        check(self.random_top_k >= 1, f"random_top_k={self.random_top_k} must be >= 1.")
        check(0 < self.stage1_frac < 1, f"stage1_frac={self.stage1_frac} must be in (0, 1): both stages "
              "share the `steps` budget (e.g. 0.333 = the paper's 30k + 60k).")
        choice("two_stage_budget", self.two_stage_budget, ("shared", "each"))
        check(0 < self.stage2_tau_end <= self.stage2_tau0,
              f"stage2_tau_end={self.stage2_tau_end} must be in (0, stage2_tau0={self.stage2_tau0}]: stage 2 "
              "anneals τ down from stage2_tau0 to it (paper: 1; --stage2_tau_end=0.1 ends at stage 1's tau_min; "
              "or raise --stage2_tau0).")
        check(not self.two_stage or self.routing == "learned",
              f"two_stage=True needs routing='learned' (got {self.routing!r}); set --routing=learned.")
        choice("router_kind", self.router_kind, ("task", "token"))
        check(self.token_top_k in (1, 2), f"token_top_k={self.token_top_k} must be 1 (Switch) or 2 (GShard); "
              f"set --token_top_k=1 or --token_top_k=2.")
        check(self.aux_loss_weight >= 0 and self.z_loss_weight >= 0,
              f"aux_loss_weight={self.aux_loss_weight} and z_loss_weight={self.z_loss_weight} must be >= 0 "
              f"(0 switches a loss off).")
        check(self.router_kind == "task" or (self.routing == "learned" and not self.two_stage),
              f"router_kind='token' learns a route per token: it needs routing='learned' and two_stage=False "
              f"(average, random, dense and two-stage are task-level recipes; got routing={self.routing!r}, "
              f"two_stage={self.two_stage}); set --routing=learned --two_stage=false.")


@dataclass(frozen=True)
class DataConfig:
    """The synthetic TinyCrossFit suite (lesson 05)."""

    data_seed: int = 0  # seed of the knowledge base and every generated example
    n_entities: int = 40  # entities in the knowledge base (at most the 64 names in vocab.py)
    n_upstream: int = 400  # upstream training examples per seen task
    n_test: int = 100  # test examples per unseen task (also the upstream dev size per seen task)
    k_per_class: int = 16  # few-shot train/dev examples per class, classification (CrossFit: 16)
    k_other: int = 32  # few-shot train/dev examples of a non-classification task (CrossFit: 32)
    # 1.0: every seen task stays upstream; lower drops seen tasks that share instruction words
    # (hence skills) with unseen ones, down to a bare cover of those words at 0.0.
    relatedness: float = 1.0
    # 2: a second knowledge base over the same names (other facts) and a copy of the recall
    # tasks that asks it, marked by the instruction word "later": conflicting tasks (lesson 07).
    worlds: int = 1
    # -1: the catalogue's held-out cells (tasks.GRIDS); k >= 0: each grid's held-out cells
    # re-drawn with seed k (tasks.resplit). `reproduce --resplit` sets it to each upstream seed.
    split_seed: int = -1
    # >= 2: copies of the recall tasks in groups 1.. that ask other facts with the same inputs
    # and instructions; `interference` = the share of facts each group changes (minimoe/interference.py).
    groups: int = 1
    interference: float = 0.0
    n_generic: int = 400  # generic (non-fact) sentences in the pre-training corpus
    n_fact_templates: int = 3  # phrasings per fact in the corpus (1 = memorised, hard to use)
    data_dir: str = ""  # "" = synthetic suite; else a CrossFit-format directory
    split_file: str = ""  # for data_dir without tasks.json: CrossFit split json ("train" = seen, "test" = unseen)
    ontology_file: str = ""  # for data_dir: {category: {skill: [tasks]}} json; else category "unknown"

    def __post_init__(self) -> None:
        # 8: a classification input may hold up to 7 distinct names.
        check(self.n_entities >= 8, f"n_entities={self.n_entities} must be >= 8; set --n_entities=8 or more.")
        check(self.n_upstream >= 1 and self.n_test >= 1, "n_upstream and n_test must be >= 1.")
        check(self.k_per_class >= 1 and self.k_other >= 1,
              f"k_per_class={self.k_per_class} and k_other={self.k_other} must be >= 1 (CrossFit: 16 and 32).")
        check(0.0 <= self.relatedness <= 1.0,
              f"relatedness={self.relatedness} must be in [0, 1]; 1.0 keeps every seen task.")
        check(self.worlds in (1, 2), f"worlds={self.worlds} must be 1 (one knowledge base) or 2 (a second, "
              f"conflicting one); set --worlds=1 or --worlds=2.")
        check(self.split_seed >= -1, f"split_seed={self.split_seed} must be -1 (the catalogue's split) or a "
              f"seed >= 0 (a re-drawn split); set --split_seed=-1 or --split_seed=0.")
        check(1 <= self.groups <= 5, f"groups={self.groups} must be between 1 (no interference groups) and 5; "
              f"set --groups=2 for the positive control.")
        check(0.0 <= self.interference <= 1.0,
              f"interference={self.interference} must be in [0, 1] (the share of facts a group changes).")
        check(self.interference == 0.0 or self.groups >= 2,
              f"interference={self.interference} changes the facts of groups 1.., but groups=1; set --groups=2.")
        check(self.groups == 1 or (self.worlds == 1 and not self.data_dir),
              f"groups={self.groups} copies the synthetic recall tasks of one world; set --worlds=1 and "
              f"leave --data_dir empty, or set --groups=1.")
        check(self.n_generic >= 0, f"n_generic={self.n_generic} must be >= 0.")
        check(self.n_fact_templates >= 1,
              f"n_fact_templates={self.n_fact_templates} must be >= 1 (each fact needs a phrasing).")
        check(self.split_seed == -1 or not self.data_dir,
              f"split_seed={self.split_seed} re-draws the synthetic suite's split; a CrossFit folder has its own "
              f"(--split_file). Leave split_seed at -1 with --data_dir.")
        check(not (self.split_file or self.ontology_file) or self.data_dir,
              "split_file and ontology_file describe a CrossFit folder; set --data_dir too, or leave them empty.")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and run control (paper: lr 1e-5 experts / 1e-3 router / 1e-2 task emb)."""

    seed: int = 0
    steps: int = 600  # upstream multi-task steps
    pretrain_steps: int = 300  # denoising pre-training steps of the dense base
    batch_size: int = 32
    lr: float = 1e-3  # experts and shared weights; paper 1e-5 at BART scale
    lr_router: float = 1e-3
    lr_task: float = 1e-2
    warmup_frac: float = 0.06  # paper: 6 %
    label_smoothing: float = 0.1  # paper: 0.1
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    eval_every: int = 200  # steps between checkpoints / route snapshots
    fs_steps: int = 100  # few-shot fine-tuning steps per (task, data seed, lr)
    fs_lrs: str = "3e-4,1e-3"  # few-shot lr grid, chosen on dev (paper: 1e-5..5e-5 at BART scale)
    fs_batch_size: int = 8
    fs_batched: bool = True  # reproduce: a cell's few-shot fine-tunes trained at once (minimoe/batched.py); false = one by one
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 1  # CPU threads (0 = torch's default); see the note in PRESETS
    compile: bool = False  # torch.compile the model (CUDA mostly)
    out: str = "runs/tiny"

    def __post_init__(self) -> None:
        check(self.steps >= 0 and self.pretrain_steps >= 0, "steps and pretrain_steps must be >= 0.")
        check(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1.")
        for name in ("lr", "lr_router", "lr_task"):
            check(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be > 0.")
        check(0 <= self.warmup_frac < 1, f"warmup_frac={self.warmup_frac} must be in [0, 1).")
        check(0 <= self.label_smoothing < 1, f"label_smoothing={self.label_smoothing} must be in [0, 1).")
        check(self.grad_clip > 0, f"grad_clip={self.grad_clip} must be > 0.")
        check(self.eval_every >= 1, f"eval_every={self.eval_every} must be >= 1.")
        check(self.fs_steps >= 0 and self.fs_batch_size >= 1, "fs_steps must be >= 0 and fs_batch_size >= 1.")
        check(bool(self.fs_lr_grid), f"fs_lrs={self.fs_lrs!r} must be comma-separated positive numbers, e.g. 3e-4,1e-3.")
        check(self.threads >= 0, f"threads={self.threads} must be >= 0 (0 = torch's default).")
        check(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
              f"device={self.device!r} is not auto, cpu, cuda or cuda:N; set --device=auto (CUDA when "
              f"present, else CPU) or e.g. --device=cuda:0.")

    @property
    def fs_lr_grid(self) -> tuple[float, ...]:
        """The few-shot learning-rate grid parsed from fs_lrs (empty if malformed)."""
        try:
            lrs = tuple(float(x) for x in self.fs_lrs.split(",") if x.strip())
        except ValueError:
            return ()
        return lrs if all(lr > 0 for lr in lrs) else ()


SECTIONS = {"model": ModelConfig, "router": RouterConfig, "data": DataConfig, "train": TrainConfig}
# Fields that change only how finished results are read (categories for the route analysis),
# never a weight or a score: a resumed run or a rerun into the same --out may change them.
ANALYSIS_ONLY = ("ontology_file",)


@dataclass(frozen=True)
class Config:
    """Everything a run needs; `Config.to_dict()` is what lands in `config.json`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # Combinations that span sections are checked here.
        if self.router.routing == "dense":
            check(self.model.n_experts == 1,
                  f"routing='dense' needs n_experts=1 (got {self.model.n_experts}); set --n_experts=1.")
        check(self.router.random_top_k <= self.model.n_experts,
              f"random_top_k={self.router.random_top_k} > n_experts={self.model.n_experts}; "
              f"use --random_top_k between 1 and {self.model.n_experts}.")
        if self.router.router_kind == "token":  # token routing picks FFN experts in routed layers
            m, r = self.model, self.router
            check(m.n_experts >= 2, f"router_kind='token' needs n_experts >= 2 (got {m.n_experts}); "
                  f"set --n_experts=3, or --router_kind=task for a dense model.")
            check(m.expert_kind == "ffn", "router_kind='token' routes FFN experts (a token cannot choose a "
                  f"whole layer's attention), got expert_kind={m.expert_kind!r}; set --expert_kind=ffn.")
            check(m.routed != "none", "router_kind='token' needs routed FFNs, got routed='none'; "
                  "set --routed=all (or encoder / decoder).")
            check(r.token_top_k <= m.n_experts, f"token_top_k={r.token_top_k} > n_experts={m.n_experts}; "
                  f"use --token_top_k between 1 and {m.n_experts}.")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, dict[str, Any]]) -> "Config":
        check(isinstance(d, dict), f"a config must be a JSON object of sections {sorted(SECTIONS)}, "
              f"not {type(d).__name__}; write it with Config.to_json().")
        unknown = set(d) - set(SECTIONS)
        check(not unknown, f"unknown config sections {sorted(unknown)}; valid: {sorted(SECTIONS)}.")
        return cls(**{name: kind(**section_values(name, kind, d.get(name, {}))) for name, kind in SECTIONS.items()})


def read_config(path) -> Config:
    """The Config in a config.json file (a run directory's); bad JSON or fields → ConfigError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return Config.from_dict(json.load(f))
    except json.JSONDecodeError as err:  # not a config at all: perhaps another program's file
        raise ConfigError(f"{path} is not valid JSON ({err}); fix or move the file, or choose a new --out.") from None
    except (OSError, ValueError) as err:  # json.JSONDecodeError and ConfigError are ValueErrors
        raise ConfigError(f"{path}: {str(err).rstrip('.')}; fix the file, or start a new --out.") from None
