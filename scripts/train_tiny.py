"""Train the tiny models that answer: `model=tiny_llava_trained`'s projector and LLM on generated shapes, and
`model=tiny_llava_video_trained`'s (``--model tiny_llava_video_trained``) on generated clips.

    python scripts/train_tiny.py [--model tiny_llava_trained] [--images N] [--steps N] [--seed 0] [--out PATH]

Writes the checkpoint to the model config's ``checkpoint.path`` (or ``--out``). How it trains, the recipes
and the defaults: `evoprune.harness.training.trainer` (`train`, `RECIPES`, `TrainingOptions`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from evoprune.harness.training.trainer import TrainingOptions, train


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="the model config to train")
    parser.add_argument("--images", type=int, help="training images, or clips (default: the model's recipe's)")
    parser.add_argument("--rounds", type=int, help="rounds of the three tasks' questions per image")
    parser.add_argument(
        "--yesno-rounds",
        type=int,
        help="rounds whose yes/no pair is trained (learned first: fewer leave the other tasks more of each step)",
    )
    parser.add_argument("--describe", type=int, help="description examples per image (0: none)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--vocab", type=int, help="BPE tokens learned on the training prompts (0: the byte tokenizer)")
    parser.add_argument("--batch", type=int, help="scenes per step")
    parser.add_argument("--pack", type=int, help="questions per scene and step, behind one image")
    parser.add_argument("--lr", type=float)
    parser.add_argument(
        "--curriculum",
        type=int,
        help="steps over which the background patches return (0: all from the start)",
    )
    parser.add_argument("--guide-layer", type=int, help="first of the three layers the guide trains (-1: no guide)")
    parser.add_argument("--look-weight", type=float, help="weight of the guide's attention loss")
    parser.add_argument(
        "--spread-weight",
        type=float,
        help="weight of a spread-evenly look (a shape's box) against a look by mass, within the attention loss",
    )
    parser.add_argument("--tell-weight", type=float, help="weight of the guide's attribute loss")
    parser.add_argument("--eval-every", type=int, help="held-out accuracy every N steps and at the end (0: never)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path, help="default: the model config's checkpoint.path")
    parser.set_defaults(**{field.name: field.default for field in dataclasses.fields(TrainingOptions)})
    args = parser.parse_args(argv)
    if args.yesno_rounds < 0:
        parser.error(f"--yesno-rounds={args.yesno_rounds} must be 0 or more (more than --rounds: all of them)")
    command = "python scripts/train_tiny.py " + " ".join(argv if argv is not None else sys.argv[1:])
    return train(TrainingOptions(**vars(args)), command.strip())


if __name__ == "__main__":
    main()
