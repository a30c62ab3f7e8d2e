"""TinyCrossFit's tasks: the task catalogue and the example generators.

The suite of lesson 05. Three categories need different skills, like CrossFit's ontology:
- *extractive* — the answer is a word of the input (copy the first/last word of a type, or
  the word of a type inside the brackets);
- *world_knowledge* — the answer is a knowledge-base fact that is not in the input (recall the
  city, colour, job, pet, food or friend of a name);
- *classification* — the answer is a label word that is never in the input (the sentiment,
  topic, word type or size of most / the first / the last word; yes/no "same class?").
Each category is a grid of skill × variant; a few cells are held out as unseen tasks, so every
unseen task is a new combination of a seen skill and a seen variant, and its instruction a new
combination of seen instruction words. The facts recall tasks ask come from
`minimoe/knowledge.py`; `minimoe/suite.py` turns these into data splits.
Read next: `minimoe/suite.py`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from minimoe.errors import DataError
from minimoe.knowledge import WORLD_MARKERS, KnowledgeBase
from minimoe.vocab import (ATTRIBUTE_POOLS, FILLERS, SENTIMENT_POOLS, SIZE_POOLS, TOPIC_POOLS,
                           WORD_TYPES, YES_NO)

METRICS = ("em", "acc", "macro_f1")
RELATIONS = (*ATTRIBUTE_POOLS, "friend")  # city colour job pet food friend
# Words that carry no type: the noise around names in knowledge inputs.
NOISE = (*FILLERS, *(w for pools in (SENTIMENT_POOLS, TOPIC_POOLS, SIZE_POOLS)
                     for pool in pools.values() for w in pool))


@dataclass(frozen=True)
class Example:
    """One input/output pair; outputs[0] is canonical, later outputs are also accepted."""

    input: str
    outputs: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.outputs, str) or not self.outputs or not all(isinstance(o, str) for o in self.outputs):
            raise DataError(f"Example({self.input!r}) needs outputs as a non-empty tuple of strings, "
                            f"e.g. ('rome',); got {self.outputs!r}.")
        object.__setattr__(self, "outputs", tuple(self.outputs))  # a list becomes a tuple


@dataclass(frozen=True)
class TaskSpec:
    """What a task is (not its data). category/skill are the two ontology levels."""

    name: str
    category: str  # extractive | classification | world_knowledge (| unknown for loaded data)
    skill: str  # e.g. copy_first, recall_city, classify_topic
    instruction: str  # 3–8 shared instruction words; the router's `instruction` input
    seen: bool  # True: upstream (training) task; False: unseen (few-shot / zero-shot) task
    labels: tuple[str, ...] | None  # the label set of a classification task, else None
    metric: str  # em | acc | macro_f1
    variant: str = ""  # the grid column: a word type, a question format or an aggregator
    world: int = 0  # which knowledge base a recall task asks (DataConfig.worlds; 0 = the usual one)
    group: int = 0  # its interference group (DataConfig.groups, minimoe/interference.py; 0 = the usual suite)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise DataError(f"task {self.name}: metric {self.metric!r} is not one of {METRICS}.")


def type_pools(kb: KnowledgeBase) -> dict[str, tuple[str, ...]]:
    """Word type → its words; a suite's names are its knowledge base's entities."""
    return {"name": kb.entities, **ATTRIBUTE_POOLS}


def class_pools(domain: str, kb: KnowledgeBase) -> dict[str, tuple[str, ...]]:
    """Class label → the words of that class, for one classification domain."""
    return {"sentiment": SENTIMENT_POOLS, "topic": TOPIC_POOLS, "size": SIZE_POOLS,
            "type": type_pools(kb)}[domain]


# The label set of each classification domain, in a fixed order (the "same" tasks use yes/no).
DOMAIN_LABELS = {"sentiment": tuple(SENTIMENT_POOLS), "topic": tuple(TOPIC_POOLS),
                 "type": WORD_TYPES, "size": tuple(SIZE_POOLS)}


# --- the catalogue -------------------------------------------------------------------------
# One grid per category: rows are skills, columns variants; S = seen (upstream), U = unseen,
# "." = no such task. Every row and every column has a seen cell, so each unseen task combines
# a skill and a variant that upstream training has practised.
GRIDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "extractive": (("copy_first", "copy_last", "copy_marked"), WORD_TYPES,
                   ("SSSUSU", "UUSSSU", ".SUSUS")),
    "world_knowledge": (tuple(f"recall_{r}" for r in RELATIONS), ("one", "first", "last"),
                        ("SUS", "SSU", "USS", "SUS", "SSU", "USU")),
    "classification": (("classify_sentiment", "classify_topic", "classify_type", "classify_size"),
                       ("most", "first", "last", "same"), ("SUSU", "SSUS", "USUS", "SUSU")),
}
INSTRUCTIONS = {  # (category, variant or skill word) → template; {w} is the skill or variant word
    ("extractive", "first"): "copy the first {w}", ("extractive", "last"): "copy the last {w}",
    ("extractive", "marked"): "copy the {w} in the brackets",
    ("world_knowledge", "one"): "recall the {w} of the name",
    ("world_knowledge", "first"): "recall the {w} of the first name",
    ("world_knowledge", "last"): "recall the {w} of the last name",
    ("classification", "most"): "tell the {w} of most words",
    ("classification", "first"): "tell the {w} of the first word",
    ("classification", "last"): "tell the {w} of the last word",
    ("classification", "same"): "same {w} for first and last word",
}


def make_spec(category: str, skill: str, variant: str, seen: bool) -> TaskSpec:
    """The TaskSpec of one grid cell; its name is `{skill}-{variant}`, e.g. `recall_city-first`."""
    what = skill.split("_", 1)[1]  # first | last | marked | city ... | sentiment ...
    if category == "extractive":
        instruction, labels, metric = INSTRUCTIONS[category, what].format(w=variant), None, "em"
    elif category == "world_knowledge":
        instruction, labels, metric = INSTRUCTIONS[category, variant].format(w=what), None, "em"
    else:
        labels = YES_NO if variant == "same" else DOMAIN_LABELS[what]
        instruction, metric = INSTRUCTIONS[category, variant].format(w=what), "macro_f1"
    return TaskSpec(f"{skill}-{variant}", category, skill, instruction, seen, labels, metric, variant)


def resplit(rows: tuple[str, ...], rng: random.Random) -> tuple[str, ...]:
    """A grid's S/U pattern with its unseen cells re-drawn: as many U as before, "." kept, and
    every row and every column left with a seen cell (the catalogue's rule).

    `rows` is one grid's pattern, e.g. ("SSSUSU", "UUSSSU", ".SUSUS"). Rejection sampling: a
    draw that leaves a row or a column without S is thrown away (few are, at these grid sizes).
    """
    cells = [(r, c) for r, row in enumerate(rows) for c, x in enumerate(row) if x != "."]
    n_unseen = sum(row.count("U") for row in rows)
    while True:
        unseen = set(rng.sample(cells, n_unseen))
        seen = [cell for cell in cells if cell not in unseen]
        if ({r for r, _ in seen} == {r for r, _ in cells}
                and {c for _, c in seen} == {c for _, c in cells}):
            return tuple("".join("." if x == "." else "U" if (r, c) in unseen else "S"
                                 for c, x in enumerate(row)) for r, row in enumerate(rows))


def catalogue(worlds: int = 1, split_seed: int = -1) -> list[TaskSpec]:
    """Every task of the synthetic suite, category by category, row by row.

    split_seed = -1 holds out the cells marked U in GRIDS; k >= 0 re-draws each grid's held-out
    cells with seed k (`resplit`): the same tasks, another seen/unseen split. `minimoe reproduce
    --resplit` draws one split per upstream seed, so a study's unseen tasks are a sample that
    grows with its seeds (lesson 07, the `resplit` study). Deviations: CrossFit fixes one
    random split of its 160 tasks.

    worlds = 2 adds a second knowledge base over the same names with other facts, and a copy
    of the world-knowledge grid (same seen/unseen cells) that asks it: `recall_city-one@later`,
    instruction `later recall the city of the name`. The two worlds *conflict*: the same input
    needs a different answer, told apart by one instruction word (the conflict study of
    lesson 07). Deviations: not in CrossFit; minimoe's knob for negative transfer.
    """
    if not 1 <= worlds <= len(WORLD_MARKERS):
        raise DataError(f"worlds={worlds} must be between 1 and {len(WORLD_MARKERS)}.")
    if split_seed < -1:
        raise DataError(f"split_seed={split_seed} must be -1 (the catalogue's split) or a seed >= 0.")
    grids = {category: (skills, variants, rows if split_seed == -1 else
                        resplit(rows, random.Random(f"{split_seed}:split:{category}")))
             for category, (skills, variants, rows) in GRIDS.items()}
    tasks = [make_spec(category, skill, variant, cell == "S")
             for category, (skills, variants, rows) in grids.items()
             for skill, row in zip(skills, rows) for variant, cell in zip(variants, row) if cell != "."]
    for w in range(1, worlds):
        marker = WORLD_MARKERS[w]
        tasks += [replace(t, name=f"{t.name}@{marker}", instruction=f"{marker} {t.instruction}", world=w)
                  for t in tasks if t.category == "world_knowledge" and t.world == 0]
    return tasks


# --- example generators ----------------------------------------------------------------------
def generate(spec: TaskSpec, kb: KnowledgeBase, rng: random.Random, label: str | None = None) -> Example:
    """One example of a synthetic task; classification tasks take the label to produce."""
    what = spec.skill.split("_", 1)[1]
    make = {"extractive": _extract, "world_knowledge": _recall, "classification": _classify}[spec.category]
    return make(what, spec.variant, kb, rng, label)


def _extract(op: str, word_type: str, kb: KnowledgeBase, rng: random.Random, label: None) -> Example:
    """copy_first / copy_last: 2–3 words of `word_type` hidden among 5–7 words of other types."""
    if op == "marked":
        return _marked_span(word_type, kb, rng)
    pools = type_pools(kb)
    targets = rng.sample(pools[word_type], rng.randint(2, 3))
    other_pools = [pool for t, pool in pools.items() if t != word_type] + [FILLERS]
    words = targets[:]
    for _ in range(rng.randint(5, 7)):  # pick a type, then a word: no type dominates
        words.append(rng.choice([w for w in rng.choice(other_pools) if w not in words]))
    rng.shuffle(words)
    typed = [w for w in words if w in targets]
    return Example(" ".join(words), (typed[0] if op == "first" else typed[-1],))


def _marked_span(word_type: str, kb: KnowledgeBase, rng: random.Random) -> Example:
    """`bako rome red , [ dilu oslo cat ] , fena lima soup` → `oslo` for word_type city.

    Every group holds a word of the type, so only the brackets tell which one; the values are
    random, not the knowledge base's, so the answer must be copied, not recalled.
    Deviations: a first version asked for a name's group (`... ? dilu`); that binding step
    stayed at chance in a small probe model, so the span is marked instead."""
    names = rng.sample(kb.entities, 3)
    values = rng.sample(ATTRIBUTE_POOLS[word_type], 3)
    other_types = [t for t in ATTRIBUTE_POOLS if t != word_type]
    groups = []
    for name, value in zip(names, values):
        pair = [value, rng.choice(ATTRIBUTE_POOLS[rng.choice(other_types)])]
        rng.shuffle(pair)  # the wanted value is not always in the same slot
        groups.append(" ".join([name, *pair]))
    marked = rng.randrange(3)
    groups[marked] = f"[ {groups[marked]} ]"
    return Example(" , ".join(groups), (values[marked],))


def _recall(relation: str, fmt: str, kb: KnowledgeBase, rng: random.Random, label: None) -> Example:
    """The fact of the only / first / last name among 1–3 noise words; never in the input."""
    n_names = 1 if fmt == "one" else rng.randint(2, 3)
    while True:  # a friend answer must not be one of the input's names
        names = rng.sample(kb.entities, n_names)
        answer = kb.fact(names[-1] if fmt == "last" else names[0], relation)
        if answer not in names:
            break
    noise = rng.sample(NOISE, rng.randint(1, 3))
    slots = set(rng.sample(range(n_names + len(noise)), n_names))  # names keep their order
    name_iter, noise_iter = iter(names), iter(noise)
    words = [next(name_iter) if i in slots else next(noise_iter) for i in range(n_names + len(noise))]
    return Example(" ".join(words), (answer,))


def _classify(domain: str, agg: str, kb: KnowledgeBase, rng: random.Random, label: str) -> Example:
    """Words of one domain whose classes give `label` by the aggregator most/first/last/same."""
    pools = class_pools(domain, kb)
    classes = list(pools)
    if agg == "most":
        seq = _plurality_classes(classes, label, rng)
    elif agg in ("first", "last"):
        seq = [label] + [rng.choice(classes) for _ in range(rng.randint(3, 5))]
        seq = seq if agg == "first" else seq[::-1]
    else:  # same: yes iff the first and last words share a class
        first = rng.choice(classes)
        last = first if label == "yes" else rng.choice([c for c in classes if c != first])
        seq = [first] + [rng.choice(classes) for _ in range(rng.randint(2, 4))] + [last]
    draws = {c: rng.sample(pools[c], seq.count(c)) for c in classes if c in seq}  # distinct words
    return Example(" ".join(draws[c].pop() for c in seq), (label,))


def _plurality_classes(classes: list[str], label: str, rng: random.Random) -> list[str]:
    """5–7 classes in which `label` occurs strictly more often than any other class."""
    n_words = rng.randint(5, 7)
    others = [c for c in classes if c != label]
    # the fewest label words that still leave room for the rest with fewer words each
    top = next(c for c in range(1, n_words + 1) if n_words - c <= len(others) * (c - 1))
    top = rng.randint(top, min(top + 1, n_words))
    seq = [label] * top + rng.sample([c for c in others for _ in range(top - 1)], n_words - top)
    rng.shuffle(seq)
    return seq


def balanced_labels(labels: Sequence[str], n: int, rng: random.Random) -> list[str]:
    """n labels in random order; the first n % len(labels) labels occur once more than the rest."""
    if not labels or n < 0:
        raise DataError(f"balanced_labels needs a non-empty label set and n >= 0 (got {labels!r}, {n}).")
    seq = [lab for i, lab in enumerate(labels) for _ in range(n // len(labels) + (i < n % len(labels)))]
    rng.shuffle(seq)
    return seq


def droppable_seen(seen: Sequence[TaskSpec], unseen: Sequence[TaskSpec]) -> list[TaskSpec]:
    """Seen tasks that can leave upstream training, tried greedily in the given order.

    A task may go when every word of every unseen instruction still occurs in the instruction
    of some seen task that stays. The relatedness knob (`DataConfig.relatedness`) drops a
    prefix of this list: fewer upstream tasks share skills with the unseen ones.
    Deviations: CrossFit fixes its task split; this knob is minimoe's (cf. MMoE's synthetic tasks).
    """
    # BEGIN EXERCISE 5.1: greedy instruction cover
    # HINT: collect the set of words the unseen instructions need
    # HINT: walk `seen` in order; a task may go if the tasks still kept without it cover that set
    needed = {w for task in unseen for w in task.instruction.split()}
    kept = list(seen)
    dropped = []
    for task in seen:
        rest = [t for t in kept if t.name != task.name]
        if needed <= {w for t in rest for w in t.instruction.split()}:
            kept = rest
            dropped.append(task)
    return dropped
    # END EXERCISE 5.1
