"""The interference knob (minimoe/interference.py) and the oracle routes.

The default leaves TinyCrossFit byte-identical (a digest of the suite the code built before the
knob existed); at the strongest level every group copy asks the same encoder input as its
group-0 task and expects another answer; the oracle's routes are the group table; bad settings
are one-line ConfigErrors.
"""

import hashlib

import pytest
import torch

from minimoe.config import DataConfig
from minimoe.errors import ConfigError
from minimoe.interference import GROUP_TAGS, MAX_GROUPS, group_kb, oracle_routes, router_text
from minimoe.pipeline import make_context, method_config, pretrain, train_upstream
from minimoe.presets import PRESETS, apply_overrides
from minimoe.reproduce import CELLS, DEFAULT_CELLS, reproduce
from minimoe.snapshots import route_snapshot
from minimoe.suite import FEW_SHOT_SEEDS, build_suite
from minimoe.vocab import FILLERS

TINY = PRESETS["tiny"].data
STRONG = DataConfig(**{**TINY.__dict__, "groups": 2, "interference": 1.0})
# sha256 of `suite_digest` for the default and the worlds = 2 suites, computed with the code
# before `groups` / `interference` existed: the knob's default must not move a byte.
DIGESTS = {1: "bbf6a74aea5a658cba27ec269d44fe0cc5aa77d9487bffc67317e4f4841cde9d",
           2: "f3b1b25d21bd47950f76141c03b6ac90494129ddb6cb353393d2e68b98c495f2"}


def suite_digest(cfg: DataConfig) -> str:
    """Every task's spec, upstream train/dev, seed-100 few-shot splits, model input and the corpus."""
    suite, h = build_suite(cfg), hashlib.sha256()
    for t in suite.tasks:
        h.update(repr((t.name, t.category, t.skill, t.instruction, t.seen, t.labels, t.metric, t.variant)).encode())
        splits = ([suite.upstream(t.name), suite.held_out(t.name)] if t.seen
                  else list(suite.few_shot(t.name, FEW_SHOT_SEEDS[0]).values()))
        for ex in (ex for split in splits for ex in split):
            h.update(repr((ex.input, ex.outputs)).encode())
        h.update(suite.source_text(t, splits[0][0]).encode())
    h.update("\n".join(suite.corpus()).encode())
    return h.hexdigest()


@pytest.mark.parametrize("worlds", [1, 2])
def test_default_suite_is_byte_identical(worlds):
    assert suite_digest(DataConfig(worlds=worlds)) == DIGESTS[worlds]


def _pairs(suite):
    """(group-0 task, its group-1 copy) for every copy."""
    return [(suite.task(t.name.removesuffix("@g1")), t) for t in suite.tasks if t.group == 1]


def test_strongest_level_same_inputs_conflicting_answers():
    suite = build_suite(STRONG)
    pairs = _pairs(suite)
    assert len(pairs) == sum(t.category == "world_knowledge" for t in suite.tasks) // 2 > 0
    for base, copy in pairs:
        assert (copy.instruction, copy.seen, copy.category) == (base.instruction, base.seen, base.category)
        if base.seen:
            a, b = suite.upstream(base.name), suite.upstream(copy.name)
        else:
            a, b = suite.few_shot(base.name, FEW_SHOT_SEEDS[0])["test"], suite.few_shot(copy.name, FEW_SHOT_SEEDS[0])["test"]
        same = [(x, y) for x, y in zip(a, b) if suite.source_text(base, x) == suite.source_text(copy, y)]
        # A friend task redraws an input whose answer is one of its names, so its copy's stream
        # drifts apart after the first such redraw: the same kind of inputs, not the same list.
        if base.skill != "recall_friend":
            assert len(same) > 0.9 * len(a), "a group copy must ask the same encoder inputs"
        assert all(x.outputs != y.outputs for x, y in same), f"{copy.name}: every answer must conflict"


def test_levels_change_a_growing_share_of_facts():
    suite = build_suite(DataConfig(**{**TINY.__dict__, "groups": 3}))
    kb = suite.kb
    changed = []
    for level in (0.0, 0.5, 1.0):
        g1 = group_kb(kb, 1, level, TINY.data_seed)
        diff = {(e, r) for e in kb.entities for r, v in kb.facts[e].items() if g1.facts[e][r] != v}
        changed.append(diff)
        assert len(diff) == round(level * len(kb.entities)) * len(kb.facts[kb.entities[0]])
    assert changed[0] <= changed[1] <= changed[2]  # nested: a higher level changes a superset
    g2 = group_kb(kb, 2, 1.0, TINY.data_seed)
    assert all(g2.facts[e][r] != group_kb(kb, 1, 1.0, TINY.data_seed).facts[e][r] for e in kb.entities
               for r in kb.facts[e] if r != "friend")
    assert all(g2.facts[e]["friend"] != e for e in kb.entities)


def test_router_text_tags_groups_the_encoder_never_sees():
    suite = build_suite(STRONG)
    base, copy = _pairs(suite)[0]
    assert router_text(base) == base.instruction and router_text(copy) != router_text(base)
    assert all(tag in FILLERS for tag in GROUP_TAGS[1:])  # in the vocabulary already
    assert not any(GROUP_TAGS[1] in t.instruction.split() for t in suite.tasks)


@pytest.mark.exercise  # trains a cell: the model and the trainer are exercises
def test_oracle_cell_routes_equal_the_group_table(tmp_path):
    cfg = apply_overrides(PRESETS["tiny"], {"groups": 2, "interference": 1.0, "steps": 2, "pretrain_steps": 2})
    ctx = make_context(cfg, build_suite(cfg.data), tmp_path, quiet=True)
    model = train_upstream(ctx, CELLS["oracle"][0], pretrain(ctx))
    routes = torch.as_tensor(route_snapshot(model))  # [n l e]
    groups = torch.tensor([t.group for t in ctx.suite.tasks])
    assert routes.shape[:2] == (len(groups), model.n_routed)
    assert torch.equal(routes, oracle_routes(ctx.suite.tasks, model.n_routed, cfg.model.n_experts))
    assert torch.equal(routes.argmax(-1), groups[:, None].expand(-1, model.n_routed))
    assert torch.equal(routes.sum(-1), torch.ones(len(groups), model.n_routed))  # one-hot, hard


@pytest.mark.parametrize("fields, message", [
    ({"groups": 0}, "groups=0 must be between 1"),
    ({"groups": MAX_GROUPS + 1}, f"groups={MAX_GROUPS + 1} must be between 1"),
    ({"interference": 1.5}, r"interference=1.5 must be in \[0, 1\]"),
    ({"interference": 0.5}, "but groups=1; set --groups=2"),
    ({"groups": 2, "worlds": 2}, "set --worlds=1"),
])
def test_bad_interference_settings_are_config_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**fields)


def test_oracle_needs_groups_and_enough_experts():
    one = build_suite(TINY)
    with pytest.raises(ConfigError, match="set --groups=2 or more"):
        oracle_routes(one.tasks, 2, 3)
    three = build_suite(DataConfig(**{**TINY.__dict__, "groups": 3}))
    with pytest.raises(ConfigError, match="set --n_experts=3 or more"):
        oracle_routes(three.tasks, 2, 2)
    assert method_config(PRESETS["tiny"], "oracle").router.routing == "oracle"


def test_reproduce_refuses_an_oracle_cell_without_groups(tmp_path):
    with pytest.raises(ConfigError, match="set --groups=2 or more"):
        reproduce(PRESETS["tiny"], tmp_path / "out", (0,), (100,), cells=("dense", "oracle"))
    assert not (tmp_path / "out").exists()  # refused before anything was written
    assert "oracle" in CELLS and "oracle" not in DEFAULT_CELLS  # opt-in: a plain run has one group
