"""The encoder–decoder task-MoE transformer (paper §3; BART-base with expert pools).

Every routed layer position holds an expert pool of m experts — whole transformer layers
(the paper) or only their feed-forward blocks (`expert_kind="ffn"`, attention shared). The pool
is `minimoe/fastpool.py::FastExpertPool`: the reference `minimoe/experts.py::ExpertPool` plus
faster paths for hard routing, tested equal to it. A task's
route picks one expert (hard) or a mixture (soft) per position; a mixed-task batch carries one
route per example, gathered from its task. Token embeddings are shared by encoder, decoder
and the output head (tied), as in BART.

Read next: `minimoe/upcycle.py` (dense → MoE, MoE → dense per task), then `minimoe/train.py`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from einops import einsum
from torch import Tensor, nn

from minimoe.config import ModelConfig, RouterConfig
from minimoe.errors import ConfigError
from minimoe.fastpool import FastExpertPool
from minimoe.layers import DecoderLayer, EncoderLayer, FeedForwardBlock
from minimoe.router import TaskRouter, average_routes, mean_pool, random_task_routes, select_routes


def task_vector_width(cfg: ModelConfig, rcfg: RouterConfig) -> int:
    """Width of the router's input: d_task for a learned embedding or a Fisher vector (its PCA
    components, `minimoe/fisher.py`), d_model for a text vector (mean-pooled encoder states)."""
    return rcfg.d_task if rcfg.task_repr in ("learned", "fisher") else cfg.d_model


def routed_flags(cfg: ModelConfig) -> tuple[list[bool], list[bool]]:
    """Which encoder and decoder positions hold expert pools (a dense model routes none)."""
    enc = cfg.n_experts > 1 and cfg.routed in ("all", "encoder")
    dec = cfg.n_experts > 1 and cfg.routed in ("all", "decoder")
    return [enc] * cfg.n_enc_layers, [dec] * cfg.n_dec_layers


class Position(nn.Module):
    """One layer position: a plain layer, or a pool of experts.

    expert_kind="layer": `pool` holds m whole layers (the paper); `layer` is None.
    expert_kind="ffn":   `layer` is this position's attention (its FFN slot is an identity,
                         shared by all tasks) and `pool` holds m FFN blocks.
    routed_ffn given:    a layer variant that routes inside its FFN slot (token routing,
                         `minimoe/upcycle.py::build_model`): a plain `layer` whose FFN is
                         routed_ffn(); no task gates, so `pool` is None.
    """

    def __init__(self, cfg: ModelConfig, decoder: bool, routed: bool,
                 routed_ffn: Callable[[], nn.Module] | None = None):
        super().__init__()
        make_layer = (lambda: DecoderLayer(cfg)) if decoder else (lambda: EncoderLayer(cfg))
        self.layer: nn.Module | None = None
        self.pool: FastExpertPool | None = None
        self.ffn_only = routed and routed_ffn is None and cfg.expert_kind == "ffn"
        if not routed:
            self.layer = make_layer()
        elif routed_ffn is not None:  # the layer routes its own tokens inside its FFN slot
            self.layer = make_layer()
            self.layer.ffn = routed_ffn()
        elif cfg.expert_kind == "layer":
            self.pool = FastExpertPool([make_layer() for _ in range(cfg.n_experts)])
        else:
            self.layer = make_layer()
            self.layer.ffn = nn.Identity()  # the FFN moves into the pool
            self.pool = FastExpertPool([FeedForwardBlock(cfg) for _ in range(cfg.n_experts)])

    def forward(self, x: Tensor, gates: Tensor | None, run_all: bool, **ctx) -> Tensor:
        """x [b s d] (or [b t d]), gates [b e] for a pool → [b s d]."""
        if self.pool is None:
            return self.layer(x, **ctx)
        if self.ffn_only:
            x = self.layer(x, **ctx)  # shared attention, then the routed FFN
        return self.pool(x, gates, run_all=run_all, **ctx)


def sinusoidal_positions(n: int, d: int) -> Tensor:
    """The Transformer's fixed sin/cos position table → [n d]."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]  # [n 1]
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return table


class TaskMoETransformer(nn.Module):
    """Encoder–decoder transformer whose routed positions pick experts per task.

    forward(src [b s], tgt_in [b t], task_ids [b]) → logits [b t v]. Routes come from
    `routes(task_ids)` unless `gates` [b l e] is given explicitly (e.g. a route chosen for an
    unseen task). `tau` is the router temperature, set by the trainer each step.

    routed_ffn: a layer variant for the routed positions instead of task-level expert pools
    (token routing; build such models with `minimoe/upcycle.py::build_model`).
    Deviations: no KV cache in generation (sequences are a few dozen tokens).
    """

    def __init__(self, cfg: ModelConfig, rcfg: RouterConfig, n_tasks: int,
                 routed_ffn: Callable[[], nn.Module] | None = None):
        super().__init__()
        if cfg.vocab_size < 1:
            raise ValueError("ModelConfig.vocab_size is 0: set it from the tokenizer "
                             "(dataclasses.replace(cfg, vocab_size=len(tokenizer.words))).")
        self.cfg, self.rcfg, self.n_tasks = cfg, rcfg, n_tasks
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        # Token and position embeddings share one std: with mismatched scales the position
        # signal drowns and copy-by-position tasks never learn.
        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        if cfg.pos_emb == "learned":
            self.pos = nn.Parameter(torch.randn(cfg.max_len, cfg.d_model) * cfg.init_std)
        else:
            self.register_buffer("pos", sinusoidal_positions(cfg.max_len, cfg.d_model) * cfg.init_std)
        enc_flags, dec_flags = routed_flags(cfg)
        if rcfg.router_kind != "task" and routed_ffn is None and any(enc_flags + dec_flags):
            raise ConfigError(f"router_kind={rcfg.router_kind!r} routes inside the FFN; build the model "
                              f"with minimoe.upcycle.build_model(cfg, rcfg, n_tasks).")
        self.ffn_routed = routed_ffn is not None  # positions route their own tokens: no task routes
        self.encoder = nn.ModuleList(Position(cfg, False, r, routed_ffn) for r in enc_flags)
        self.decoder = nn.ModuleList(Position(cfg, True, r, routed_ffn) for r in dec_flags)
        self.enc_norm, self.dec_norm = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        # l = positions routed per *task*; token-routed positions need no task route (l = 0).
        self.n_routed = 0 if self.ffn_routed else sum(enc_flags) + sum(dec_flags)
        self.tau = rcfg.tau0
        self._build_router(cfg, rcfg, n_tasks)

    def _build_router(self, cfg: ModelConfig, rcfg: RouterConfig, n_tasks: int) -> None:
        l, e = self.n_routed, cfg.n_experts
        self.router: TaskRouter | None = None
        self.task_emb: nn.Embedding | None = None
        # Fixed routes: average / random baselines (also the fallback of a dense model); the
        # oracle's table needs the suite's groups: `pipeline.build_routed` fills it in.
        if rcfg.routing == "random" and l:
            fixed = random_task_routes(n_tasks, l, e, rcfg.random_top_k, rcfg.route_seed)
        else:
            fixed = average_routes(n_tasks, l, e)
        self.register_buffer("fixed_routes", fixed)  # [n l e]
        # Fixed task vectors (instruction / examples / fisher): filled by `set_task_vectors`.
        width = rcfg.d_task if rcfg.task_repr == "fisher" else cfg.d_model
        self.register_buffer("task_vectors", torch.zeros(n_tasks, width))  # [n d] (fisher: [n d_task])
        if rcfg.routing != "learned" or l == 0:
            return
        if rcfg.task_repr == "learned":
            self.task_emb = nn.Embedding(n_tasks, rcfg.d_task)
        self.router = TaskRouter(task_vector_width(cfg, rcfg), l, e, rcfg.d_router_hidden)

    # ----------------------------------------------------------------- routing
    def task_inputs(self) -> Tensor:
        """The router's input for every task → [n d_task] (learned, fisher) or [n d] (text)."""
        return self.task_emb.weight if self.task_emb is not None else self.task_vectors

    def route_logits(self, task_vecs: Tensor | None = None) -> Tensor:
        """Router logits for every task (or for the given task vectors) → [n l e]."""
        if self.router is None:
            raise RuntimeError(f"routing={self.rcfg.routing!r} has no router logits.")
        return self.router(self.task_inputs() if task_vecs is None else task_vecs)

    def task_routes(self, generator: torch.Generator | None = None) -> Tensor:
        """Gates of every task → [n l e]: sampled in training, deterministic in eval."""
        if self.router is None:
            return self.fixed_routes
        return select_routes(self.route_logits(), self.rcfg.selection, self.tau, self.training, generator)

    def routes(self, task_ids: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per-example gates for a mixed-task batch: task_ids [b] → [b l e].

        One route is drawn per *task* (not per example): every example of a task in the batch
        shares its Gumbel sample, so the route is a property of the task, as in the paper.
        A token-routed model needs no task ids: it returns None.
        """
        if self.ffn_routed:
            return None
        if self.router is None:
            return self.fixed_routes[task_ids]
        uniq, inverse = torch.unique(task_ids, return_inverse=True)
        logits = self.router(self.task_inputs()[uniq])  # [u l e]
        gates = select_routes(logits, self.rcfg.selection, self.tau, self.training, generator)
        return gates[inverse]  # [b l e]

    @property
    def routes_from_labels(self) -> bool:
        """True when the router reads Fisher vectors: an unseen task's route then needs labelled
        examples (its few-shot train set), so there is no zero-shot route."""
        return self.router is not None and self.rcfg.task_repr == "fisher"

    def aux_loss(self) -> Tensor | float:
        """The weighted auxiliary losses of the last forward (token routing: load balancing + router
        z-loss), summed over the layer variants that have one (`take_aux_loss`) and then
        forgotten; 0.0 for task-level and dense models. `minimoe/train.py` adds it to the loss."""
        return sum((m.take_aux_loss(self.rcfg.aux_loss_weight, self.rcfg.z_loss_weight)
                    for m in self.modules() if hasattr(m, "take_aux_loss")), 0.0)

    def set_task_vectors(self, vectors: Tensor) -> None:
        """Install fixed representations of all tasks, [n d] (instruction/examples) or [n d_task] (fisher)."""
        if vectors.shape != self.task_vectors.shape:
            raise ValueError(f"task vectors have shape {tuple(vectors.shape)}, expected "
                             f"{tuple(self.task_vectors.shape)} (one vector per task).")
        self.task_vectors.copy_(vectors.detach())

    @torch.no_grad()
    def text_representation(self, tokens: Tensor, pad_id: int = 0) -> Tensor:
        """Mean-pooled encoder states of texts (paper's TextEmb), with average routing:
        tokens [b s] → [b d]. Average routing on a just-upcycled model = the dense encoder."""
        src_pad = tokens != pad_id
        gates = average_routes(1, self.n_routed, self.cfg.n_experts).to(self.pos.device)
        gates = gates.expand(tokens.shape[0], -1, -1) if self.n_routed else None
        states = self.encode(tokens, src_pad, gates)
        return mean_pool(states, src_pad)

    # ----------------------------------------------------------------- network
    def _embed(self, tokens: Tensor) -> Tensor:
        n = tokens.shape[1]
        if n > self.cfg.max_len:
            raise ValueError(f"sequence of {n} tokens exceeds max_len={self.cfg.max_len}; "
                             f"raise --max_len or shorten the inputs.")
        return self.embed(tokens) + self.pos[:n]  # [b s d]

    def _run_all(self) -> bool:
        # The exact straight-through mode runs every expert so gradients reach every gate.
        return self.training and self.rcfg.selection == "st_gumbel" and self.rcfg.st_mode == "full"

    def encode(self, src: Tensor, src_pad: Tensor, gates: Tensor | None) -> Tensor:
        """src [b s], src_pad [b s] (True = real token), gates [b l e] → memory [b s d]."""
        x, i, run_all = self._embed(src), 0, self._run_all()
        for pos in self.encoder:
            g = None
            if pos.pool is not None:
                g, i = gates[:, i], i + 1
            x = pos(x, g, run_all, src_pad=src_pad)
        return self.enc_norm(x)

    def decode(self, tgt_in: Tensor, memory: Tensor, src_pad: Tensor, gates: Tensor | None) -> Tensor:
        """tgt_in [b t], memory [b s d] → logits [b t v] (output head tied to the embedding)."""
        n_enc = sum(p.pool is not None for p in self.encoder)
        y, i, run_all = self._embed(tgt_in), n_enc, self._run_all()
        for pos in self.decoder:
            g = None
            if pos.pool is not None:
                g, i = gates[:, i], i + 1
            y = pos(y, g, run_all, memory=memory, src_pad=src_pad)
        return einsum(self.dec_norm(y), self.embed.weight, "b t d, v d -> b t v")

    def forward(self, src: Tensor, tgt_in: Tensor, task_ids: Tensor | None = None,
                gates: Tensor | None = None, pad_id: int = 0,
                generator: torch.Generator | None = None) -> Tensor:
        """src [b s], tgt_in [b t], task_ids [b] (or gates [b l e]) → logits [b t v]."""
        if gates is None and self.n_routed:
            if task_ids is None:
                raise ValueError("a routed model needs task_ids [b] or explicit gates [b l e].")
            gates = self.routes(task_ids, generator)
        src_pad = src != pad_id
        return self.decode(tgt_in, self.encode(src, src_pad, gates), src_pad, gates)

    @torch.no_grad()
    def generate(self, src: Tensor, task_ids: Tensor | None = None, gates: Tensor | None = None,
                 bos_id: int = 1, eos_id: int = 2, pad_id: int = 0, max_new: int = 8) -> Tensor:
        """Greedy decoding → tokens [b t'] (without BOS; pad after EOS)."""
        if gates is None and self.n_routed:
            gates = self.routes(task_ids)
        src_pad = src != pad_id
        memory = self.encode(src, src_pad, gates)
        out = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(min(max_new, self.cfg.max_len - 1)):
            next_tok = self.decode(out, memory, src_pad, gates)[:, -1].argmax(-1)  # [b]
            next_tok = torch.where(done, torch.full_like(next_tok, pad_id), next_tok)
            out = torch.cat([out, next_tok[:, None]], dim=1)
            done |= next_tok == eos_id
            if bool(done.all()):
                break
        return out[:, 1:]
