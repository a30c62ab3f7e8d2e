"""Tests for minimoe/tasks.py and minimoe/suite.py: the TinyCrossFit suite.

Every generated example is checked against an independent oracle written here (not the
generator's code): extractive answers occur in the input and are the word the task names;
knowledge answers equal the knowledge-base fact and are absent from the input; classification
answers are labels, never in the input, recomputed from the words. Also: split sizes, label
balance, disjoint splits, determinism, instruction coverage, the relatedness and worlds knobs,
baselines.
Run: python -m pytest tests/test_tasks.py -q
"""

import random
from collections import Counter

import pytest

from minimoe.config import DataConfig
from minimoe.errors import ConfigError, DataError
from minimoe.presets import PRESETS
from minimoe.suite import FEW_SHOT_SEEDS, build_suite, select_tasks, trivial_baselines
from minimoe.tasks import (GRIDS, Example, TaskSpec, balanced_labels, catalogue, droppable_seen, resplit,
                           type_pools)
from minimoe.vocab import (FACT_TEMPLATES, INSTRUCTION_WORDS, SENTIMENT_POOLS, SIZE_POOLS,
                           TOPIC_POOLS)

TINY = PRESETS["tiny"].data


@pytest.fixture(scope="module")
def suite():
    return build_suite(TINY)


def all_examples(suite, task):
    if task.seen:
        return suite.upstream(task.name) + suite.held_out(task.name)
    return [ex for seed in FEW_SHOT_SEEDS for exs in suite.few_shot(task.name, seed).values() for ex in exs]


# --- the oracle: what each task asks, computed from the words alone --------------------------
def word_classes(suite, domain):
    pools = {"sentiment": SENTIMENT_POOLS, "topic": TOPIC_POOLS, "size": SIZE_POOLS,
             "type": type_pools(suite.kb)}[domain]
    return {w: c for c, words in pools.items() for w in words}


def oracle(suite, task, text):
    """The answer a correct solver gives, or an AssertionError if the input is ill-formed."""
    words = text.split()
    what = task.skill.split("_", 1)[1]
    if task.category == "extractive" and what == "marked":
        groups = [g.split() for g in text.split(" , ")]
        assert len(groups) == 3 and all(len(g) in (3, 5) for g in groups)
        [group] = [g for g in groups if g[0] == "["]  # exactly one group is bracketed
        assert group[-1] == "]"
        [value] = [w for w in group[1:-1] if w in type_pools(suite.kb)[task.variant]]
        assert all(any(w in type_pools(suite.kb)[task.variant] for w in g) for g in groups)
        return value
    if task.category == "extractive":
        typed = [w for w in words if w in type_pools(suite.kb)[task.variant]]
        assert len(typed) >= 2, "first and last must differ"
        return typed[0] if what == "first" else typed[-1]
    if task.category == "world_knowledge":
        kb = suite.kbs[task.world]  # the knowledge base this task asks (DataConfig.worlds)
        names = [w for w in words if w in kb.entities]
        assert len(names) == len(set(names)) and (len(names) == 1) == (task.variant == "one")
        return kb.fact(names[-1] if task.variant == "last" else names[0], what)
    classes = [word_classes(suite, what)[w] for w in words]  # every word belongs to the domain
    assert len(set(words)) == len(words)
    if task.variant == "most":
        (top, n_top), *rest = Counter(classes).most_common()
        assert not rest or rest[0][1] < n_top, "the plurality must be unique"
        return top
    if task.variant == "same":
        return "yes" if classes[0] == classes[-1] else "no"
    return classes[0] if task.variant == "first" else classes[-1]


def test_every_example_satisfies_its_task_definition(suite):
    for task in suite.tasks:
        for ex in all_examples(suite, task):
            words = ex.input.split()
            assert len(ex.outputs) == 1 and 1 <= len(ex.outputs[0].split()) <= 2
            assert ex.outputs[0] == oracle(suite, task, ex.input), (task.name, ex)
            if task.category == "extractive":
                assert ex.outputs[0] in words
            else:  # knowledge facts and label words are never in the input
                assert ex.outputs[0] not in words, (task.name, ex)
            if task.category == "classification":
                assert ex.outputs[0] in task.labels


def test_catalogue_shape():
    tasks = catalogue()
    by_category = Counter((t.category, t.seen) for t in tasks)
    assert {c for c, _ in by_category} == {"extractive", "classification", "world_knowledge"}
    for category in GRIDS:
        assert by_category[category, True] >= 6 and by_category[category, False] >= 6
    assert sum(not t.seen for t in tasks) >= 20
    assert len({t.name for t in tasks}) == len(tasks)
    assert all("_" in t.name and "-" in t.name for t in tasks)
    for t in tasks:
        assert 3 <= len(t.instruction.split()) <= 8 and set(t.instruction.split()) <= set(INSTRUCTION_WORDS)
        assert (t.labels is not None) == (t.category == "classification")
        assert t.metric == ("macro_f1" if t.labels else "em")


def test_unseen_instructions_combine_seen_words_and_skills(suite):
    seen_words = {w for t in suite.seen_tasks() for w in t.instruction.split()}
    seen_skills = {t.skill for t in suite.seen_tasks()}
    seen_variants = {(t.category, t.variant) for t in suite.seen_tasks()}
    seen_instructions = {t.instruction for t in suite.seen_tasks()}
    for t in suite.unseen_tasks():
        assert set(t.instruction.split()) <= seen_words, t.name
        assert t.skill in seen_skills and (t.category, t.variant) in seen_variants, t.name
        assert t.instruction not in seen_instructions  # a new combination, not a copy


def test_unseen_tasks_never_appear_upstream(suite):
    assert not {t.name for t in suite.seen_tasks()} & {t.name for t in suite.unseen_tasks()}
    unseen_inputs = {ex.input for t in suite.unseen_tasks() for ex in all_examples(suite, t)}
    for task in suite.unseen_tasks():
        with pytest.raises(DataError, match="unseen"):
            suite.upstream(task.name)
    for task in suite.seen_tasks():
        with pytest.raises(DataError, match="seen"):
            suite.few_shot(task.name, 100)
    # An unseen task's test inputs may look like a seen task's (same variant), but never share
    # its (instruction, input) pair: the source text the model reads differs.
    upstream_sources = {suite.source_text(t, ex) for t in suite.seen_tasks() for ex in suite.upstream(t.name)}
    assert not {suite.source_text(t, ex) for t in suite.unseen_tasks() for ex in all_examples(suite, t)} & upstream_sources
    assert unseen_inputs  # the check above was not vacuous


def test_split_sizes_and_balance(suite):
    for task in suite.seen_tasks():
        train, dev = suite.upstream(task.name), suite.upstream(task.name, "dev")
        assert (len(train), len(dev)) == (TINY.n_upstream, TINY.n_test)
        assert not {e.input for e in train} & {e.input for e in dev}
        for exs in (train, dev):
            if task.labels:
                counts = Counter(e.outputs[0] for e in exs)
                assert set(counts) == set(task.labels) and max(counts.values()) - min(counts.values()) <= 1
    for task in suite.unseen_tasks():
        k = TINY.k_per_class if task.labels else TINY.k_other
        for seed in FEW_SHOT_SEEDS:
            split = suite.few_shot(task.name, seed)
            n = k * len(task.labels) if task.labels else k
            assert [len(split[s]) for s in ("train", "dev", "test")] == [n, n, TINY.n_test]
            inputs = [{e.input for e in split[s]} for s in ("train", "dev", "test")]
            assert sum(map(len, inputs)) == len(set().union(*inputs)), "splits overlap or repeat"
            if task.labels:
                for s in ("train", "dev"):
                    assert Counter(e.outputs[0] for e in split[s]) == {lab: k for lab in task.labels}
        assert suite.few_shot(task.name, 13)["test"] == suite.few_shot(task.name, 100)["test"]
        assert suite.few_shot(task.name, 13)["train"] != suite.few_shot(task.name, 100)["train"]


def test_same_seed_same_data_in_any_call_order():
    a, b = build_suite(TINY), build_suite(TINY)
    names = [t.name for t in a.unseen_tasks()]
    first = {n: a.few_shot(n, 42) for n in names}
    b.few_shot(names[-1], 13), b.upstream(b.seen_tasks()[0].name, "dev")  # other streams first
    second = {n: b.few_shot(n, 42) for n in reversed(names)}
    assert first == second
    assert a.corpus() == b.corpus() and a.kb == b.kb


def test_other_seed_other_data():
    a, b = build_suite(TINY), build_suite(DataConfig(**{**TINY.__dict__, "data_seed": 1}))
    assert a.kb.facts != b.kb.facts
    task = a.unseen_tasks()[0].name
    assert a.few_shot(task, 100) != b.few_shot(task, 100) and a.corpus() != b.corpus()


def test_source_text_is_short_and_in_vocabulary(suite):
    for task in suite.tasks:
        for ex in all_examples(suite, task)[:20]:
            ids = suite.tokenizer.encode(suite.source_text(task, ex))  # strict: every word known
            assert len(ids) + 2 <= 40  # plus bos/eos, within the tiny model's budget
            assert ids[len(task.instruction.split())] == suite.tokenizer.sep_id


def test_corpus_states_each_fact_in_several_templates(suite):
    corpus = suite.corpus()
    kb = suite.kb
    n_facts = len(kb.entities) * len(FACT_TEMPLATES)
    assert len(corpus) == n_facts * TINY.n_fact_templates + TINY.n_generic
    entity = kb.entities[0]
    for relation, templates in FACT_TEMPLATES.items():
        for template in templates[:TINY.n_fact_templates]:
            assert template.format(x=entity, v=kb.fact(entity, relation)) in corpus
    for sentence in corpus:
        suite.tokenizer.encode(sentence)


def test_knowledge_base_is_balanced_and_friends_are_others(suite):
    kb = suite.kb
    for relation in ("city", "colour", "job", "pet", "food"):
        counts = Counter(kb.fact(e, relation) for e in kb.entities)
        assert max(counts.values()) - min(counts.values()) <= 1
    assert all(kb.fact(e, "friend") in kb.entities and kb.fact(e, "friend") != e for e in kb.entities)


def test_unknown_task_lists_nearest_names(suite):
    with pytest.raises(DataError, match="recall_city-first"):
        suite.task("recall_city-frist")
    assert suite.task("recall_city-first").category == "world_knowledge"


def test_trivial_baselines_do_not_solve_any_task(suite):
    table = trivial_baselines(suite)
    assert set(table) == {t.name for t in suite.tasks}
    for name, scores in table.items():
        task = suite.task(name)
        assert set(scores) == {"majority", "copy_first", "random_label"}
        assert max(scores.values()) <= 0.5, (name, scores)
        if task.labels:
            assert scores["copy_first"] == 0.0  # a label word is never in the input
            assert scores["majority"] <= 1 / len(task.labels) + 0.05
            assert scores["random_label"] == pytest.approx(1 / len(task.labels))


def test_bad_config_values():
    with pytest.raises(ConfigError, match="n_entities"):
        build_suite(DataConfig(n_entities=65))
    with pytest.raises(ConfigError, match="n_fact_templates"):
        build_suite(DataConfig(n_fact_templates=4))
    with pytest.raises(ConfigError, match="relatedness"):
        DataConfig(relatedness=1.5)
    with pytest.raises(ConfigError, match="n_entities"):
        DataConfig(n_entities=4)


def test_example_validation_and_lazy_reexport():
    assert Example("a b", ["c"]).outputs == ("c",)
    with pytest.raises(DataError, match="non-empty tuple"):
        Example("a b", ())
    with pytest.raises(DataError, match="non-empty tuple"):
        Example("a b", "c")
    with pytest.raises(DataError, match="metric"):
        TaskSpec("t", "c", "s", "a b c", True, None, "bleu")


def test_balanced_labels():
    rng = random.Random(0)
    seq = balanced_labels(("a", "b", "c"), 8, rng)
    assert Counter(seq) == {"a": 3, "b": 3, "c": 2}
    assert balanced_labels(("a", "b"), 4, random.Random(5)) == balanced_labels(("a", "b"), 4, random.Random(5))
    with pytest.raises(DataError):
        balanced_labels((), 3, rng)


# --- exercise 5.1: the greedy instruction cover behind the relatedness knob ------------------
def spec(name, instruction, seen=True):
    return TaskSpec(name, "c", "s", instruction, seen, None, "em")


@pytest.mark.exercise
@pytest.mark.ex5_1
def test_droppable_seen_hand_example():
    seen = [spec("a", "copy the first city"), spec("b", "copy the last city"),
            spec("c", "copy the first name"), spec("d", "recall the city of the name")]
    unseen = [spec("u", "copy the last name", seen=False)]
    # a: b, c still give copy/the/last/name; b: "last" only in b → stays; c: "name" in c, d → goes;
    # d: now the only "name" → stays.
    assert [t.name for t in droppable_seen(seen, unseen)] == ["a", "c"]
    assert droppable_seen(seen, []) == seen  # nothing needed: every seen task may go
    assert droppable_seen([], unseen) == []


@pytest.mark.exercise
@pytest.mark.ex5_1
def test_droppable_seen_leaves_a_minimal_cover():
    tasks = catalogue()
    seen, unseen = [t for t in tasks if t.seen], [t for t in tasks if not t.seen]
    dropped = {t.name for t in droppable_seen(seen, unseen)}
    kept = [t for t in seen if t.name not in dropped]
    needed = {w for t in unseen for w in t.instruction.split()}
    assert needed <= {w for t in kept for w in t.instruction.split()}
    for t in kept:  # greedy in order leaves no task that could still go
        assert not needed <= {w for s in kept if s is not t for w in s.instruction.split()}


@pytest.mark.exercise
@pytest.mark.ex5_1
def test_relatedness_knob_drops_seen_tasks_and_keeps_coverage():
    sizes = []
    for r in (1.0, 0.5, 0.0):
        s = build_suite(DataConfig(**{**TINY.__dict__, "relatedness": r}))
        seen_words = {w for t in s.seen_tasks() for w in t.instruction.split()}
        assert all(set(t.instruction.split()) <= seen_words for t in s.unseen_tasks())
        assert len(s.unseen_tasks()) == 21 and {t.category for t in s.seen_tasks()} == set(GRIDS)
        sizes.append(len(s.seen_tasks()))
    assert sizes[0] == 30 and sizes[0] > sizes[1] > sizes[2]
    assert select_tasks(catalogue(), 1.0) == catalogue()


# --- the worlds knob: a second, conflicting knowledge base ----------------------------------------
def test_one_world_is_the_default_suite(suite):
    assert catalogue() == catalogue(1) and all(t.world == 0 and "@" not in t.name for t in suite.tasks)
    assert suite.kbs == (suite.kb,)


def test_second_world_asks_other_facts_of_the_same_names():
    two = build_suite(DataConfig(**{**TINY.__dict__, "worlds": 2}))
    one = build_suite(TINY)
    a, b = two.kbs
    assert a == one.kb and b.entities == a.entities  # world 0 is untouched; the same people
    assert a.facts != b.facts
    extra = [t for t in two.tasks if t.world == 1]
    knowledge = [t for t in one.tasks if t.category == "world_knowledge"]
    assert [(t.name, t.seen) for t in extra] == [(f"{t.name}@later", t.seen) for t in knowledge]
    assert all(t.instruction == f"later {k.instruction}" for t, k in zip(extra, knowledge))
    assert [t for t in two.tasks if t.world == 0] == one.tasks  # the first world's tasks unchanged
    differ = total = 0
    for task in extra:  # each world-1 example: its world's fact, and mostly not the other's
        for ex in all_examples(two, task)[:40]:
            assert ex.outputs[0] == oracle(two, task, ex.input), (task.name, ex)
            names = [w for w in ex.input.split() if w in a.entities]
            name = names[-1] if task.variant == "last" else names[0]
            differ += a.fact(name, task.skill.split("_", 1)[1]) != ex.outputs[0]
            total += 1
            two.tokenizer.encode(two.source_text(task, ex))  # every word known
    assert differ / total > 0.6, "the worlds must conflict on most inputs"
    corpus = two.corpus()
    assert len(corpus) == len(one.corpus()) + len(b.entities) * len(FACT_TEMPLATES) * TINY.n_fact_templates
    entity = b.entities[0]
    assert "later " + FACT_TEMPLATES["city"][0].format(x=entity, v=b.fact(entity, "city")) in corpus
    assert two.tokenizer.vocab_size == one.tokenizer.vocab_size  # no new words: model shapes stay the same


def test_worlds_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="--worlds=1 or --worlds=2"):
        DataConfig(worlds=3)
    with pytest.raises(DataError, match="worlds=0"):
        catalogue(0)


# --- the split knob: the same tasks, another seen/unseen split ---------------------------------
def test_resplit_keeps_the_grid_rules():
    rows = GRIDS["extractive"][2]
    for seed in range(30):
        new = resplit(rows, random.Random(seed))
        assert [len(r) for r in new] == [len(r) for r in rows]
        assert [[x == "." for x in r] for r in new] == [[x == "." for x in r] for r in rows]
        assert sum(r.count("U") for r in new) == sum(r.count("U") for r in rows)
        assert all("S" in r for r in new) and all("S" in col for col in zip(*new))
    assert resplit(rows, random.Random(1)) == resplit(rows, random.Random(1))


def test_split_seed_draws_another_split_of_the_same_tasks():
    base = catalogue()
    assert catalogue(split_seed=-1) == base
    splits = [catalogue(split_seed=k) for k in range(5)]
    for tasks in splits:
        assert [t.name for t in tasks] == [t.name for t in base]
        assert Counter((t.category, t.seen) for t in tasks) == Counter((t.category, t.seen) for t in base)
    assert len({frozenset(t.name for t in tasks if not t.seen) for tasks in splits}) == 5
    for k in range(5):  # every unseen instruction is still a new combination of seen words
        s = build_suite(DataConfig(**{**TINY.__dict__, "split_seed": k}))
        seen_words = {w for t in s.seen_tasks() for w in t.instruction.split()}
        assert all(set(t.instruction.split()) <= seen_words for t in s.unseen_tasks())
    with pytest.raises(ConfigError, match="split_seed"):
        DataConfig(split_seed=-2)
    with pytest.raises(ConfigError, match="split_file"):
        DataConfig(split_seed=0, data_dir="some/crossfit/folder")
