"""Task interference: groups of tasks that map the *same inputs* to *conflicting outputs*.

The positive control of task routing. `DataConfig.groups = G >= 2` copies the world-knowledge
grid G - 1 times (same seen/unseen cells, so unseen tasks belong to groups too); group g's
copies ask a knowledge base of their own, `group_kb`, in which a share `DataConfig.interference`
of the facts of every relation differ from group 0's. Group 0 is the usual suite.

What tells the groups apart — and what does not:
- the encoder input (instruction + example) is *identical* across groups: a copy keeps the
  instruction word for word and draws its inputs from its group-0 task's seeded stream
  (`stream_name`), so `recall_city-one` and `recall_city-one@g1` ask the same questions and
  disagree on a share `interference` of the answers (a friend task's stream drifts apart after
  its first redraw of an input that names the answer: the same kind of inputs, not the same
  list). A dense model cannot read the group, so it
  must compromise (unlike `DataConfig.worlds`, whose marker word lets one set of weights serve
  both worlds: the reason the conflict study of lesson 07 found no routing gain);
- the task identity, and so the route, does. `oracle_routes` gives group g expert g at every
  routed layer (the upper bound of what a routing decision can add). A router over text
  vectors reads `router_text`: the instruction with a group tag in front, a word the encoder
  input never holds. Choice: the tag, not routes picked on an unseen task's few-shot dev set,
  because zero-shot transfer needs a route before any labelled example is seen, and the tag is
  what a task id is to a real benchmark (which dataset a task comes from).
The pre-training corpus states group 0's facts only (a second, unmarked set would contradict
it): every group g >= 1 fact is learned from its group's seen tasks, and an unseen copy must
reach it through its group's experts. At interference 0 the groups agree on every fact: the
same tasks and compute, nothing to separate (the study's level 0).
Deviations: not in the paper or CrossFit; minimoe's knob for the positive control (lesson 07).
"""

from __future__ import annotations

import random
from dataclasses import replace

import torch

from minimoe.errors import ConfigError
from minimoe.knowledge import KnowledgeBase
from minimoe.tasks import RELATIONS, TaskSpec
from minimoe.vocab import ATTRIBUTE_POOLS

# The router-text tag of group g >= 1: existing filler words (the vocabulary keeps its size).
GROUP_TAGS = ("", "today", "near", "saw", "met")
MAX_GROUPS = len(GROUP_TAGS)


def group_tasks(tasks: list[TaskSpec], groups: int) -> list[TaskSpec]:
    """tasks plus groups - 1 copies of the group-0 world-knowledge tasks, `{name}@g{g}`.

    A copy keeps instruction, seen flag and labels: only `group` (and the name) differ."""
    copies = [replace(t, name=f"{t.name}@g{g}", group=g) for g in range(1, groups)
              for t in tasks if t.category == "world_knowledge" and t.world == 0 and t.group == 0]
    return list(tasks) + copies


def stream_name(task: TaskSpec) -> str:
    """The name that seeds a task's example streams: a group copy shares its group-0 task's,
    so both draw the same inputs (and only the answers can differ)."""
    suffix = f"@g{task.group}"
    return task.name[:-len(suffix)] if task.group and task.name.endswith(suffix) else task.name


def router_text(task: TaskSpec) -> str:
    """What a text-vector router reads of a task: its instruction, tagged with its group."""
    return f"{GROUP_TAGS[task.group]} {task.instruction}" if task.group else task.instruction


def group_kb(kb: KnowledgeBase, group: int, interference: float, data_seed: int) -> KnowledgeBase:
    """Group `group`'s knowledge base: kb with a share `interference` of each relation's facts changed.

    The changed entities are the first round(interference · n) of a seeded order per relation
    (the same for every group, so a higher level changes a superset of facts); a changed value
    moves `group` places along its pool (a friend: along the names, skipping the entity itself),
    so it always differs from group 0's and groups g ≠ g' differ from each other too.
    """
    facts = {e: dict(kb.facts[e]) for e in kb.entities}
    n_changed = round(interference * len(kb.entities))
    for relation in RELATIONS:
        order = list(kb.entities)
        random.Random(f"{data_seed}:interference:{relation}").shuffle(order)
        pool = kb.entities if relation == "friend" else ATTRIBUTE_POOLS[relation]
        for entity in order[:n_changed]:
            i = pool.index(facts[entity][relation]) + group
            if pool[i % len(pool)] == entity:  # nobody is their own friend
                i += 1
            facts[entity][relation] = pool[i % len(pool)]
    return KnowledgeBase(kb.entities, facts)


def oracle_routes(tasks: list[TaskSpec], n_layers: int, n_experts: int) -> torch.Tensor:
    """The ground-truth route table: group g → expert g at every routed layer. Returns [n l e]."""
    groups = 1 + max((t.group for t in tasks), default=0)
    if groups < 2:
        raise ConfigError("routing='oracle' routes by the suite's task groups, and this suite has one; "
                          "set --groups=2 or more (and --interference) with the synthetic suite.")
    if n_experts < groups:
        raise ConfigError(f"routing='oracle' gives each of the {groups} task groups its own expert, but "
                          f"n_experts={n_experts}; set --n_experts={groups} or more.")
    table = torch.zeros(len(tasks), n_layers, n_experts)
    table[torch.arange(len(tasks)), :, torch.tensor([t.group for t in tasks])] = 1.0
    return table
