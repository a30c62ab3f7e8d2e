"""The `minimoe` command (also `python -m minimoe`): one subcommand per job.

    minimoe train ...          one end-to-end run (same options as train_tiny.py)
    minimoe data --out DIR     export the synthetic suite in CrossFit's file format
    minimoe reproduce ...      the paper's two findings: ARG tables and route analysis
    minimoe verdicts           both findings judged over every committed study (or --pool DIRS)
    minimoe bench ...          speed: hard vs soft vs dense vs extracted, MFU
    minimoe make-student OUT   a student copy with every exercise stubbed out
    minimoe grade              points per exercise (terminal, JSON, CSV); --reference, --class
    minimoe --version          the version a course pins (pyproject.toml)

Each subcommand lives in its own module exposing `add_arguments(parser)` and `main(args)`;
modules are imported only when their subcommand runs, so `minimoe --help` is instant.
Errors of minimoe's own types print one line (problem + fix) and exit 2; so does an exercise
stub that was reached in a student copy (it names the exercise to solve first). Ctrl-C, SIGTERM
and SIGHUP print one line (what was kept, how to continue) and exit 130, 143, 129
(minimoe/interrupt.py).
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata

from minimoe.errors import MinimoeError, Parser
from minimoe.exercises import unsolved_exercise
from minimoe.interrupt import like_ctrl_c, report

COMMANDS = {
    "train": ("minimoe.runner", "one end-to-end run: pre-train, upstream, evaluate, report"),
    "data": ("minimoe.crossfit", "export the synthetic suite in CrossFit's file format"),
    "reproduce": ("minimoe.reproduce_cli", "reproduce the paper's findings (ARG tables, routes)"),
    "verdicts": ("minimoe.verdicts", "judge both findings: paired endpoints over seeds, pooled folders"),
    "bench": ("minimoe.bench_study", "benchmark dense / hard / soft / extracted models (--study: a study's cells)"),
    "make-student": ("minimoe.classroom", "write a student copy with exercises stubbed out"),
    "grade": ("minimoe.classroom", "grade exercises: points per exercise"),
}


def version() -> str:
    """The installed package's version (pyproject.toml's `version`): what a course pins."""
    try:
        return metadata.version("minimoe")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed: pip install -e .)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = Parser(prog="minimoe", description=__doc__.splitlines()[0])
    top.add_argument("--version", "-V", action="store_true", help="print the version and exit")
    top.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    if argv[:1] in (["--version"], ["-V"]):
        print(f"minimoe {version()}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        top.parse_args(argv[:1])  # prints argparse's "invalid choice" message and exits 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = module.build_cli(name) if hasattr(module, "build_cli") else Parser(prog=f"minimoe {name}")
    args = parser.parse_args(rest)
    try:
        with like_ctrl_c():  # SIGTERM, SIGHUP too
            return int(module.cli_main(name, args) or 0)
    except KeyboardInterrupt as err:
        return report(err, "finished work is kept; run the same command again to continue")
    except MinimoeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NotImplementedError as err:  # an exercise stub: say which exercise, not a traceback
        unsolved = unsolved_exercise(err)
        if unsolved is None:
            raise
        print(f"error: {unsolved}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
