"""Train a tiny task-level mixture-of-experts transformer end to end, on CPU, in minutes.

    python train_tiny.py                       # the `small` preset, learned routing
    python train_tiny.py --method=two_stage    # the paper's final recipe
    python train_tiny.py --steps=2000 --seed=1 --out=runs/long
    python train_tiny.py --help                # every option with its default

What happens (each step is one function in minimoe/pipeline.py, see lessons/06):
  1. generate the TinyCrossFit suite (seen and unseen tasks in three categories);
  2. pre-train a dense encoder–decoder by denoising the suite's corpus (the "BART-base");
  3. upcycle it into a task-MoE (3 experts per layer position) and train it on all seen tasks
     with a router that picks experts per task;
  4. score seen tasks, then unseen tasks zero-shot and few-shot;
  5. write the run directory (config.json, metrics.jsonl, routes.npy, figures/*.png, report.md
     with every task's score and the expert it chose per layer) and print a short summary.

The training loop of steps 2 and 3 (and of few-shot tuning) is one function: read
`minimoe/train.py::fit` — learning-rate schedule, router temperature, forward, loss, backward,
clipping, AdamW, checkpoints.
"""

import sys

from minimoe.errors import MinimoeError
from minimoe.exercises import unsolved_exercise
from minimoe.interrupt import like_ctrl_c, report
from minimoe.runner import build_parser, config_from_args, run


def main(argv=None) -> int:
    parser = build_parser("train_tiny.py", __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        with like_ctrl_c():  # SIGTERM (a scheduler's preemption) and SIGHUP stop like Ctrl-C
            summary = run(cfg, method=args.method, resume=args.resume, quiet=args.quiet)
    except KeyboardInterrupt as err:  # the training loop saved a checkpoint first; exit 130 or 143
        return report(err, "run again with --resume to continue")
    except MinimoeError as err:  # our errors already say what went wrong and how to fix it
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NotImplementedError as err:  # a student copy: name the exercise to solve first
        unsolved = unsolved_exercise(err)
        if unsolved is None:
            raise
        print(f"error: {unsolved}", file=sys.stderr)
        return 2
    return 0 if summary else 1


if __name__ == "__main__":
    sys.exit(main())
