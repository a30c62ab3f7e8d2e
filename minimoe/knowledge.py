"""The knowledge base: the names of a suite and their facts, in one world or two.

World-knowledge tasks (`minimoe/tasks.py`) ask a fact that is not in the input (the city of
a name); the model can only have learned it from the pre-training corpus, where every fact is
stated in a few templates (`KnowledgeBase.sentences`). `DataConfig.worlds = 2` adds a second
knowledge base over the same names with other facts, marked by one word (`WORLD_MARKERS`) in
its corpus sentences and its tasks' instructions: two worlds that contradict each other on the
same inputs (the conflict study, lesson 07).
Deviations: none — CrossFit's world-knowledge tasks draw on facts a pre-trained model holds;
here the facts are generated, so which ones the model could have seen is known exactly.
Read next: `minimoe/tasks.py`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from minimoe.vocab import ATTRIBUTE_POOLS, NAMES

# The word that marks world w ≥ 1 in instructions and in the corpus (an existing filler word, so
# the vocabulary, and with it every model's shapes, stays the same): `DataConfig.worlds`.
WORLD_MARKERS = ("", "later")


@dataclass(frozen=True)
class KnowledgeBase:
    """Entities (names) and their facts: facts[name][relation] = value."""

    entities: tuple[str, ...]
    facts: dict[str, dict[str, str]]

    def fact(self, entity: str, relation: str) -> str:
        return self.facts[entity][relation]

    def sentences(self, templates: dict[str, Sequence[str]], n_templates: int, marker: str = "") -> list[str]:
        """Every fact stated with the first n_templates templates of its relation, each sentence
        starting with `marker` (a second world's facts are marked: `later bako lives in oslo`)."""
        start = f"{marker} " if marker else ""
        return [start + t.format(x=e, v=v) for e in self.entities for r, v in self.facts[e].items()
                for t in templates[r][:n_templates]]


def make_kb(n_entities: int, rng: random.Random, entities: Sequence[str] | None = None) -> KnowledgeBase:
    """Draw n_entities names and give each one value per relation (every value used about equally).

    entities: reuse these names (a second world: the same people with other facts)."""
    entities = tuple(entities) if entities is not None else tuple(rng.sample(NAMES, n_entities))
    facts: dict[str, dict[str, str]] = {e: {} for e in entities}
    for relation, pool in ATTRIBUTE_POOLS.items():
        # Balanced values keep the majority baseline of a recall task near 1 / len(pool).
        values = [pool[i % len(pool)] for i in range(len(entities))]
        rng.shuffle(values)
        for entity, value in zip(entities, values):
            facts[entity][relation] = value
    for i, entity in enumerate(entities):
        facts[entity]["friend"] = rng.choice(entities[:i] + entities[i + 1:])
    return KnowledgeBase(entities, facts)
