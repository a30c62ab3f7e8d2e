"""Tests for minimoe/crossfit.py and crossfit_suite.py: CrossFit's task-file format, export and loading.

Checks the exact TSV round trip (task names with `_` and `-`, several acceptable outputs,
non-ASCII text), that every malformed line raises DataError naming file:line, that exports are
byte-identical for a seed and differ across seeds, that an export loads back into the same
suite, and that a real-CrossFit-style folder (split json, ontology, k-shot files only) loads with
clear errors for whatever is missing. Run: python -m pytest tests/test_crossfit.py -q
"""

import json
import shutil
from pathlib import Path

import pytest

from minimoe.cli import main as cli
from minimoe.config import DataConfig
from minimoe.crossfit import (export_suite, parse_task_file_name, parse_task_line, read_task_file, task_file_name,
                              write_task_file)
from minimoe.crossfit_suite import load_crossfit_dir, load_suite
from minimoe.errors import DataError
from minimoe.presets import PRESETS
from minimoe.suite import FEW_SHOT_SEEDS, build_suite
from minimoe.tasks import Example

TINY = PRESETS["tiny"].data


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    suite = build_suite(TINY)
    return suite, export_suite(suite, tmp_path_factory.mktemp("export") / "tiny")


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- task files ------------------------------------------------------------------------------
def test_round_trip_is_exact(tmp_path):
    examples = [Example("where does bako live ?", ("rome",)),
                Example("ade_corpus_v2-dosage : 5 mg [SEP] daily", ("5 mg", "5mg", "five mg")),
                Example("  spaced  input ", ("yes ",)),  # inner and edge spaces are kept
                Example("naïve café – ünïcode", ("ja",))]
    path = tmp_path / "glue-rte_x" / "glue-rte_x_16_42_dev.tsv"
    write_task_file(path, examples)
    assert read_task_file(path) == examples
    assert path.read_bytes().count(b"\n") == len(examples) and b"\r" not in path.read_bytes()


def test_reader_accepts_crlf_and_a_missing_final_newline(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes(b"a b\tc\r\nd\te\tf")
    assert read_task_file(path) == [Example("a b", ("c",)), Example("d", ("e", "f"))]


@pytest.mark.parametrize("content, message", [
    (b"ok\tfine\nno tab here\n", ":2: no tab"),
    (b"input\t\n", ":1: output 1 is empty"),
    (b"input\tout\t\n", ":1: output 2 is empty"),
    (b"\tout\n", ":1: empty input"),
    (b"ok\tfine\nin\x00put\tout\n", ":2: NUL byte"),
    (b"ok\tfine\n\nok\tfine\n", ":2: no tab"),
    (b"ok\tfine\ncaf\xe9\tout\n", ":2: not UTF-8"),
    (b"", "empty task file"),
])
def test_malformed_lines_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad_16_42_train.tsv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"bad_16_42_train.tsv{message}" if message.startswith(":") else message):
        read_task_file(path)


def test_missing_file_and_unwritable_examples(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_task_file(tmp_path / "absent.tsv")
    for bad in (Example("a\tb", ("c",)), Example("a", ("line\nbreak",)), Example("a", (" ",))):
        with pytest.raises(DataError, match="example 0"):
            write_task_file(tmp_path / "x.tsv", [bad])


def test_parse_task_line_directly():
    assert parse_task_line("q\ta\tb", "f:1") == Example("q", ("a", "b"))
    with pytest.raises(DataError, match="^f:9: no tab"):
        parse_task_line("q", "f:9")


# --- export ------------------------------------------------------------------------------------
def test_export_layout(exported):
    suite, root = exported
    meta = {t["name"]: t for t in json.loads((root / "tasks.json").read_text())["tasks"]}
    assert list(meta) == [t.name for t in suite.tasks]
    for task in suite.tasks:
        files = sorted(p.name for p in (root / task.name).iterdir())
        assert meta[task.name]["category"] == task.category and meta[task.name]["seen"] == task.seen
        if task.seen:
            assert files == [f"{task.name}_upstream_dev.tsv", f"{task.name}_upstream_train.tsv"]
        else:
            k = 16 if task.labels else 32
            assert files == sorted(task_file_name(task.name, k, seed, split)
                                   for seed in FEW_SHOT_SEEDS for split in ("train", "dev", "test"))
    assert (root / "vocab.txt").read_text().split("\n")[0] == suite.tokenizer.words[6]


def test_export_is_byte_identical_for_a_seed_and_differs_across_seeds(exported, tmp_path):
    suite, root = exported
    again = export_suite(build_suite(TINY), tmp_path / "again")
    assert tree(again) == tree(root)
    other = export_suite(build_suite(DataConfig(**{**TINY.__dict__, "data_seed": 7})), tmp_path / "other")
    a, b = tree(root), tree(other)
    assert a.keys() == b.keys() and a != b
    with pytest.raises(DataError, match="not an empty folder"):
        export_suite(suite, again)


def test_cli_exports(tmp_path, capsys):
    args = ["data", "--out", str(tmp_path / "cli"), "--n_upstream=8", "--n_test=4", "--n_entities=12"]
    assert cli(args) == 0
    assert "30 seen and 21 unseen" in capsys.readouterr().out
    assert len(read_task_file(tmp_path / "cli" / "copy_first-name" / "copy_first-name_upstream_train.tsv")) == 8
    assert cli(["data", "--out", str(tmp_path / "cli2"), "--relatedness=2"]) == 2  # a one-line error


def test_malformed_tasks_json_is_named(tmp_path):
    root = tmp_path / "d"
    (root / "t").mkdir(parents=True)
    (root / "tasks.json").write_text(json.dumps({"tasks": [{"name": "t", "seen": "yes"}]}))
    with pytest.raises(DataError, match="tasks.json: task 0 is malformed"):
        load_crossfit_dir(root)
    (root / "tasks.json").write_text(json.dumps({"tasks": [{"name": "t", "seen": True}]}))
    (root / "u").mkdir()
    with pytest.raises(DataError, match=r"folders \['u'\] are not in tasks.json"):
        load_crossfit_dir(root)


# --- loading (uses exercise 5.2: parse_task_file_name) -----------------------------------------
@pytest.mark.exercise
@pytest.mark.ex5_2
@pytest.mark.parametrize("file_name, task, expected", [
    ("glue-rte_16_42_dev.tsv", "glue-rte", (16, 42, "dev")),
    ("ade_corpus_v2-dosage_32_100_train.tsv", "ade_corpus_v2-dosage", (32, 100, "train")),
    ("x_16_16_16_test.tsv", "x_16", (16, 16, "test")),  # the name itself ends like a k
    ("copy_first-name_upstream_train.tsv", "copy_first-name", (None, None, "train")),
])
def test_parse_task_file_name(file_name, task, expected):
    assert parse_task_file_name(file_name, task) == expected
    k, seed, split = expected
    assert task_file_name(task, k, seed, split) == file_name


@pytest.mark.exercise
@pytest.mark.ex5_2
@pytest.mark.parametrize("file_name", ["glue-rte_16_42.tsv", "glue-rte_16_42_val.tsv", "glue-rte_upstream_test.tsv",
                                       "glue_rte_16_42_dev.tsv", "glue-rte_a_42_dev.tsv", "glue-rte_16_42_dev.txt"])
def test_parse_task_file_name_rejects(file_name):
    with pytest.raises(DataError, match="glue-rte"):
        parse_task_file_name(file_name, "glue-rte")


@pytest.mark.exercise
@pytest.mark.ex5_2
def test_export_loads_back_as_the_same_suite(exported):
    suite, root = exported
    loaded = load_crossfit_dir(root)
    assert loaded.tasks == suite.tasks and loaded.tokenizer == suite.tokenizer
    assert loaded.corpus() == suite.corpus()
    for task in suite.tasks:
        if task.seen:
            assert loaded.upstream(task.name) == suite.upstream(task.name)
            assert loaded.held_out(task.name) == suite.held_out(task.name)
        else:
            assert loaded.k_shot(task.name) == suite.k_shot(task.name)
            assert all(loaded.few_shot(task.name, s) == suite.few_shot(task.name, s) for s in FEW_SHOT_SEEDS)
    assert load_suite(DataConfig(data_dir=str(root))).tasks == suite.tasks
    with pytest.raises(DataError, match="copy_marked-pet"):
        loaded.task("copy_marked-pets")


@pytest.mark.exercise
@pytest.mark.ex5_2
def test_missing_or_malformed_files_are_named(exported, tmp_path):
    def broken(name):  # a fresh copy of the export to break
        return Path(shutil.copytree(exported[1], tmp_path / name))

    root = broken("one_file")
    (root / "recall_city-first" / "recall_city-first_32_21_dev.tsv").unlink()
    with pytest.raises(DataError, match="1 task files are missing: recall_city-first/recall_city-first_32_21_dev.tsv"):
        load_crossfit_dir(root)
    root = broken("one_seed")
    for f in (root / "recall_city-first").glob("*_21_*"):
        f.unlink()  # a whole seed gone: its three files are named
    with pytest.raises(DataError, match="3 task files are missing: recall_city-first/recall_city-first_32_21_train"):
        load_crossfit_dir(root)
    root = broken("one_folder")
    shutil.rmtree(root / "recall_city-first")
    with pytest.raises(DataError, match="task folders missing: recall_city-first"):
        load_crossfit_dir(root)
    root = broken("bad_line")
    (root / "copy_first-name" / "copy_first-name_upstream_train.tsv").write_bytes(b"ok\tfine\nx\n")
    with pytest.raises(DataError, match="copy_first-name_upstream_train.tsv:2: no tab"):
        load_crossfit_dir(root)
    root = broken("bad_vocab")
    (root / "vocab.txt").write_text("bako\n")
    with pytest.raises(DataError, match="vocab.txt lacks words"):
        load_crossfit_dir(root)


def write_crossfit_task(root, task, k, seeds, rows):
    for seed in seeds:
        for split in ("train", "dev", "test"):
            write_task_file(root / task / task_file_name(task, k, seed, split),
                            [Example(f"{task} {split} {seed} {i}", (out,)) for i, out in enumerate(rows)])


@pytest.mark.exercise
@pytest.mark.ex5_2
def test_real_crossfit_folder_with_split_and_ontology(tmp_path):
    root = tmp_path / "data"
    write_crossfit_task(root, "ade_corpus_v2-dosage", 32, (100, 13), ["5 mg", "daily"])
    write_crossfit_task(root, "glue-rte", 16, FEW_SHOT_SEEDS, ["entailment", "not_entailment"])
    write_crossfit_task(root, "unused_task", 16, (100,), ["x"])
    split = tmp_path / "random.json"
    split.write_text(json.dumps({"train": ["ade_corpus_v2-dosage"], "dev": ["unused_task"], "test": ["glue-rte"]}))
    ontology = tmp_path / "ontology.json"
    ontology.write_text(json.dumps({"classification": {"nli": ["glue-rte"]}}))
    with pytest.raises(DataError, match="split_file"):
        load_crossfit_dir(root)  # no tasks.json, no upstream files: seen tasks are unknown
    suite = load_crossfit_dir(root, split_file=split, ontology_file=ontology)
    assert [t.name for t in suite.tasks] == ["ade_corpus_v2-dosage", "glue-rte"]
    rte, ade = suite.task("glue-rte"), suite.task("ade_corpus_v2-dosage")
    assert (rte.category, rte.skill, rte.seen) == ("classification", "nli", False)
    assert (ade.category, ade.instruction, ade.seen) == ("unknown", "ade corpus v2 dosage", True)
    assert suite.k_shot("glue-rte") == 16 and len(suite.few_shot("glue-rte", 87)["test"]) == 2
    # upstream of a CrossFit train task = all its k-shot train files, in file-name order
    assert [ex.input for ex in suite.upstream("ade_corpus_v2-dosage")][:3] == [
        "ade_corpus_v2-dosage train 100 0", "ade_corpus_v2-dosage train 100 1", "ade_corpus_v2-dosage train 13 0"]
    assert suite.tokenizer.encode("5 mg entailment")  # built from the data's words
    split.write_text(json.dumps({"train": ["ade_corpus_v2-dosage", "glue-mrpc"], "test": ["glue-rte"]}))
    with pytest.raises(DataError, match="task folders missing: glue-mrpc"):
        load_crossfit_dir(root, split_file=split)
    (root / "glue-rte" / "glue-rte_16_87_test.tsv").unlink()
    split.write_text(json.dumps({"train": ["ade_corpus_v2-dosage"], "test": ["glue-rte"]}))
    with pytest.raises(DataError, match="glue-rte/glue-rte_16_87_test.tsv"):
        load_crossfit_dir(root, split_file=split)


@pytest.mark.exercise
@pytest.mark.ex5_2
def test_bad_folders_and_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_crossfit_dir(tmp_path / "nope")
    root = tmp_path / "d"
    write_crossfit_task(root, "glue-rte", 16, FEW_SHOT_SEEDS, ["yes"])
    (root / "glue-rte" / "glue-rte_16_42_valid.tsv").write_text("a\tb\n")
    split = tmp_path / "s.json"
    split.write_text(json.dumps({"train": [], "test": ["glue-rte"]}))
    with pytest.raises(DataError, match="glue-rte_16_42_valid.tsv: unrecognised task file name"):
        load_crossfit_dir(root, split_file=split)
    (root / "glue-rte" / "glue-rte_16_42_valid.tsv").unlink()
    (root / "glue-rte" / "glue-rte_32_42_train.tsv").write_text("a\tb\n")
    with pytest.raises(DataError, match="several k"):
        load_crossfit_dir(root, split_file=split)
    split.write_text("{not json")
    with pytest.raises(DataError, match="s.json: not valid"):
        load_crossfit_dir(root, split_file=split)


@pytest.mark.ex5_2  # loading reads every file name (parse_task_file_name)
def test_two_world_suite_exports_and_loads_back(tmp_path):
    """Task names of the second world contain '@' (recall_city-one@later): still plain folder names."""
    suite = build_suite(DataConfig(**{**TINY.__dict__, "worlds": 2}))
    loaded = load_crossfit_dir(export_suite(suite, tmp_path / "two"))
    assert loaded.tasks == suite.tasks and loaded.corpus() == suite.corpus()
    task = next(t for t in suite.tasks if t.world == 1)
    assert loaded.upstream(task.name) == suite.upstream(task.name)
