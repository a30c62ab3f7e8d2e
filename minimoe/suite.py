"""The task suite: seen/unseen splits like CrossFit, the pre-training corpus, trivial baselines.

Splits, as in CrossFit: seen (upstream) tasks get `n_upstream` training examples each (plus a
held-out upstream dev set); every unseen task gets few-shot train/dev sets of k per class
(classification) or k examples (others) for each data seed (100, 13, 21, 42, 87) and one larger
test set shared by the seeds. `Suite` is the interface every later module uses; the synthetic
suite generates its data lazily, each split from its own seeded stream, so data never depends on
the order of calls. `minimoe/crossfit_suite.py` gives the same interface over a CrossFit folder.
Run `python -m minimoe.suite` to print the trivial-baseline table of lesson 05.
Read next: `minimoe/crossfit.py`.
"""

from __future__ import annotations

import difflib
import random
from collections import Counter
from itertools import zip_longest

from minimoe.config import DataConfig
from minimoe.errors import ConfigError, DataError
from minimoe.interference import group_kb, group_tasks, stream_name
from minimoe.knowledge import WORLD_MARKERS, KnowledgeBase, make_kb
from minimoe.tasks import (Example, TaskSpec, balanced_labels, catalogue, class_pools, droppable_seen,
                           generate, type_pools)
from minimoe.vocab import FACT_TEMPLATES, GENERIC_TEMPLATES, NAMES, SEP, Tokenizer, default_tokenizer

FEW_SHOT_SEEDS = (100, 13, 21, 42, 87)  # CrossFit's five data samples
ROUTER_EXAMPLES = 32  # a seen task's examples for its router vector: about an unseen task's k-shot set
MAX_TRIES = 200  # draws per example before a split is declared too small to be disjoint


class Suite:
    """Tasks, a tokenizer and their data. Subclasses supply `_upstream`, `_few_shot`, `corpus`."""

    def __init__(self, tasks: list[TaskSpec], tokenizer: Tokenizer):
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise DataError(f"task names must be unique; repeated: {sorted({n for n in names if names.count(n) > 1})}.")
        self.tasks = list(tasks)
        self.tokenizer = tokenizer
        self._by_name = {t.name: t for t in tasks}

    def seen_tasks(self) -> list[TaskSpec]:
        return [t for t in self.tasks if t.seen]

    def unseen_tasks(self) -> list[TaskSpec]:
        return [t for t in self.tasks if not t.seen]

    def categories(self) -> list[str]:
        return sorted({t.category for t in self.tasks})

    def task(self, name: str) -> TaskSpec:
        """The task called `name`; an unknown name raises DataError listing the nearest names."""
        if name not in self._by_name:
            near = difflib.get_close_matches(name, list(self._by_name), n=3, cutoff=0.0)
            raise DataError(f"unknown task {name!r}; nearest: {', '.join(near)} "
                            f"({len(self.tasks)} tasks in suite.tasks).")
        return self._by_name[name]

    def source_text(self, task: TaskSpec, ex: Example) -> str:
        """The model input: instruction words, the separator token, then the example input."""
        return f"{task.instruction} {SEP} {ex.input}"

    def upstream(self, name: str, split: str = "train") -> list[Example]:
        """Upstream data of a seen task: split "train" (n_upstream) or "dev" (held out)."""
        task = self.task(name)
        if not task.seen:
            raise DataError(f"task {name!r} is unseen: it has no upstream data; use few_shot({name!r}, seed).")
        if split not in ("train", "dev"):
            raise DataError(f"upstream split {split!r} is not 'train' or 'dev'.")
        return list(self._upstream(task, split))

    def held_out(self, name: str) -> list[Example]:
        """Held-out examples of a seen task (its upstream "dev" split), to score seen tasks."""
        return self.upstream(name, "dev")

    def few_shot(self, name: str, seed: int) -> dict[str, list[Example]]:
        """Few-shot splits {"train", "dev", "test"} of an unseen task for one data seed."""
        task = self.task(name)
        if task.seen:
            raise DataError(f"task {name!r} is seen (upstream); few-shot splits exist for unseen tasks only.")
        return {split: list(examples) for split, examples in self._few_shot(task, seed).items()}

    def router_examples(self, name: str, seed: int = FEW_SHOT_SEEDS[0]) -> list[Example]:
        """Labelled examples that describe a task to the router (task_repr `examples`, `fisher`):
        a seen task's first ROUTER_EXAMPLES upstream examples; an unseen task's few-shot train
        split of data seed `seed`, all that a few-shot learner of that seed may look at."""
        if self.task(name).seen:
            return self.upstream(name)[:ROUTER_EXAMPLES]
        return self.few_shot(name, seed)["train"]

    # What a data source supplies (SyntheticSuite below; CrossFitSuite in minimoe/crossfit_suite.py).
    def k_shot(self, name: str) -> int:
        """k of the few-shot files: examples per class (classification) or in all (others)."""
        raise NotImplementedError(f"{type(self).__name__} must define k_shot")

    def corpus(self) -> list[str]:
        """Sentences for denoising pre-training."""
        raise NotImplementedError(f"{type(self).__name__} must define corpus")

    def _upstream(self, task: TaskSpec, split: str) -> list[Example]:
        raise NotImplementedError(f"{type(self).__name__} must define _upstream")

    def _few_shot(self, task: TaskSpec, seed: int) -> dict[str, list[Example]]:
        raise NotImplementedError(f"{type(self).__name__} must define _few_shot")


class SyntheticSuite(Suite):
    """TinyCrossFit: data generated from the catalogue and a knowledge base, cached per split."""

    def __init__(self, cfg: DataConfig, kb: KnowledgeBase, tasks: list[TaskSpec],
                 other_worlds: tuple[KnowledgeBase, ...] = (), other_groups: tuple[KnowledgeBase, ...] = ()):
        super().__init__(tasks, default_tokenizer())
        self.cfg, self.kb = cfg, kb
        self.kbs = (kb, *other_worlds)  # kbs[task.world]: the knowledge base a recall task asks
        self.group_kbs = (kb, *other_groups)  # group_kbs[task.group] for a group copy (interference.py)
        self._cache: dict[tuple, list[Example]] = {}

    def k_shot(self, name: str) -> int:
        return self.cfg.k_per_class if self.task(name).labels else self.cfg.k_other

    def _sample(self, task: TaskSpec, n: int, stream: str, avoid: set[str]) -> list[Example]:
        """n examples from the seeded stream `stream`, balanced over labels, no input in `avoid`."""
        key = (task.name, stream)
        if key not in self._cache:
            # str seeds are stable; a group copy draws its group-0 task's inputs (interference.py)
            rng = random.Random(f"{self.cfg.data_seed}:{stream_name(task)}:{stream}")
            kb = self.group_kbs[task.group] if task.group else self.kbs[task.world]
            labels = balanced_labels(task.labels, n, rng) if task.labels else [None] * n
            avoid = set(avoid)  # the caller's set stays as it was
            examples = []
            for label in labels:
                for _ in range(MAX_TRIES):
                    ex = generate(task, kb, rng, label)
                    if ex.input not in avoid:
                        break
                else:
                    raise DataError(f"task {task.name}: cannot draw {n} {stream} inputs disjoint from the "
                                    f"other splits; lower n_upstream/n_test or raise n_entities.")
                avoid.add(ex.input)
                examples.append(ex)
            self._cache[key] = examples
        return self._cache[key]

    def _upstream(self, task: TaskSpec, split: str) -> list[Example]:
        train = self._sample(task, self.cfg.n_upstream, "upstream_train", set())
        if split == "train":
            return train
        return self._sample(task, self.cfg.n_test, "upstream_dev", {ex.input for ex in train})

    def _few_shot(self, task: TaskSpec, seed: int) -> dict[str, list[Example]]:
        n = self.k_shot(task.name) * (len(task.labels) if task.labels else 1)
        test = self._sample(task, self.cfg.n_test, "test", set())  # one test set for every seed
        avoid = {ex.input for ex in test}
        train = self._sample(task, n, f"{seed}_train", avoid)
        dev = self._sample(task, n, f"{seed}_dev", avoid | {ex.input for ex in train})
        return {"train": train, "dev": dev, "test": test}

    def corpus(self) -> list[str]:
        """Each fact in n_fact_templates phrasings plus n_generic random generic sentences."""
        rng = random.Random(f"{self.cfg.data_seed}:corpus")
        sentences = self.kb.sentences(FACT_TEMPLATES, self.cfg.n_fact_templates)
        for world, kb in enumerate(self.kbs[1:], start=1):  # other worlds' facts, marked
            sentences += kb.sentences(FACT_TEMPLATES, self.cfg.n_fact_templates, WORLD_MARKERS[world])
        sentences += [_fill(rng.choice(GENERIC_TEMPLATES), self.kb, rng) for _ in range(self.cfg.n_generic)]
        rng.shuffle(sentences)
        return sentences


def _fill(template: str, kb: KnowledgeBase, rng: random.Random) -> str:
    """Fill each {slot} of a generic template with a random word of that kind."""
    pools = {**type_pools(kb), **{d: [w for ws in class_pools(d, kb).values() for w in ws]
                                  for d in ("sentiment", "topic", "size")}}
    return " ".join(rng.choice(pools[w[1:-1]]) if w.startswith("{") else w for w in template.split())


def build_suite(cfg: DataConfig) -> Suite:
    """TinyCrossFit from cfg (deterministic in cfg.data_seed). A run's suite, which may be the
    CrossFit-format folder cfg.data_dir, comes from `minimoe/crossfit_suite.py::load_suite`.

    Deviations: CrossFit has 160 real NLP tasks; TinyCrossFit has 51 synthetic ones (30 seen,
    21 unseen at relatedness 1; 69 with `worlds=2`) whose categories need different skills by
    construction.
    """
    if cfg.data_dir:
        raise ConfigError(f"data_dir={cfg.data_dir!r} is a CrossFit folder, not a synthetic suite; "
                          f"read it with minimoe.crossfit_suite.load_suite(cfg).")
    if cfg.n_entities > len(NAMES):
        raise ConfigError(f"n_entities={cfg.n_entities} > the {len(NAMES)} names in minimoe/vocab.py; "
                          f"set --n_entities={len(NAMES)} or fewer.")
    n_templates = min(len(t) for t in FACT_TEMPLATES.values())
    if cfg.n_fact_templates > n_templates:
        raise ConfigError(f"n_fact_templates={cfg.n_fact_templates} > the {n_templates} templates per "
                          f"relation in minimoe/vocab.py; set --n_fact_templates={n_templates} or fewer.")
    kb = make_kb(cfg.n_entities, random.Random(f"{cfg.data_seed}:kb"))
    others = tuple(make_kb(cfg.n_entities, random.Random(f"{cfg.data_seed}:kb:{w}"), kb.entities)
                   for w in range(1, cfg.worlds))  # the same people, other facts
    groups = tuple(group_kb(kb, g, cfg.interference, cfg.data_seed) for g in range(1, cfg.groups))
    tasks = group_tasks(catalogue(cfg.worlds, cfg.split_seed), cfg.groups)
    return SyntheticSuite(cfg, kb, select_tasks(tasks, cfg.relatedness), others, groups)


def select_tasks(tasks: list[TaskSpec], relatedness: float) -> list[TaskSpec]:
    """Drop round((1 - relatedness) · D) of the D droppable seen tasks (see `droppable_seen`).

    Categories take turns in the drop order, so each loses seen tasks at the same rate.
    """
    if relatedness >= 1.0:
        return list(tasks)
    by_category: dict[str, list[TaskSpec]] = {}
    for t in tasks:
        if t.seen:
            by_category.setdefault(t.category, []).append(t)
    order = [t for group in zip_longest(*by_category.values()) for t in group if t is not None]
    droppable = droppable_seen(order, [t for t in tasks if not t.seen])
    dropped = {t.name for t in droppable[:round((1.0 - relatedness) * len(droppable))]}
    return [t for t in tasks if t.name not in dropped]


def _eval_sets(suite: Suite, task: TaskSpec) -> tuple[list[Example], list[Example]]:
    """(train, test) for a baseline: upstream train/dev, or few-shot train/test of seed 100."""
    if task.seen:
        return suite.upstream(task.name, "train"), suite.upstream(task.name, "dev")
    splits = suite.few_shot(task.name, FEW_SHOT_SEEDS[0])
    return splits["train"], splits["test"]


def trivial_baselines(suite: Suite) -> dict[str, dict[str, float]]:
    """Test accuracy of three guessers that ignore what the task asks, per task:
    majority — the most frequent training output; copy_first — the input's first word;
    random_label — a uniformly random label (the label set, else the distinct training
    outputs), scored by its expected accuracy so the table carries no sampling noise."""
    table = {}
    for task in suite.tasks:
        train, test = _eval_sets(suite, task)
        counts = Counter(ex.outputs[0] for ex in train)
        majority = min(counts, key=lambda o: (-counts[o], o))  # ties → alphabetical, reproducible
        choices = set(task.labels) if task.labels else set(counts)
        table[task.name] = {
            "majority": sum(majority in ex.outputs for ex in test) / len(test),
            "copy_first": sum(ex.input.split()[0] in ex.outputs for ex in test) / len(test),
            "random_label": sum(len(choices & set(ex.outputs)) / len(choices) for ex in test) / len(test)}
    return table


def baseline_table(suite: Suite) -> str:
    """`trivial_baselines` as a markdown table, one row per task."""
    rows = ["| task | category | seen | majority | copy_first | random_label |", "|---|---|---|---|---|---|"]
    for name, scores in trivial_baselines(suite).items():
        task = suite.task(name)
        rows.append(f"| {name} | {task.category} | {'yes' if task.seen else 'no'} | "
                    + " | ".join(f"{scores[k]:.2f}" for k in ("majority", "copy_first", "random_label")) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(baseline_table(build_suite(DataConfig())))
