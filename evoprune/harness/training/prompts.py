"""What the tiny models are trained on, as text: the tasks' prompts as lmms-eval builds them, the words a
question names, the video answers' letters, and the BPE tokenizer learned on the training prompts."""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import yaml

from evoprune.harness.common.paths import REPO_ROOT
from evoprune.harness.data.generated_data import COLORS
from evoprune.harness.data.shapes_data import CELL_NAMES, TASKS, describe
from evoprune.harness.data.smoke_video import TASK_KINDS
from evoprune.harness.inference.video import frame_times, time_instruction
from evoprune.harness.models.tiny_tokenizers import BYTE_SPECIALS

TASK_DIR = REPO_ROOT / "evoprune" / "harness" / "data" / "tasks" / "smoke"
VIDEO_TASK_DIR = REPO_ROOT / "evoprune" / "harness" / "data" / "tasks" / "smoke_video"
DESCRIBE_PROMPT = "Describe the image."


def task_prompts(task_dir: Path = TASK_DIR, tasks=TASKS, variant: str | None = None) -> dict:
    """Each task's ``doc_to_text`` bound to its file's ``lmms_eval_specific_kwargs`` as lmms-eval binds them
    for a model whose prompt variant is ``variant`` (that variant's when the file has one, else the default)."""
    spec = importlib.util.spec_from_file_location(f"{task_dir.name}_task_utils", task_dir / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))

    def load(name: str) -> dict:
        config = yaml.load((task_dir / name).read_text(), Loader=Loader)
        included = config.pop("include", None)
        return {**load(included), **config} if included else config

    prompts = {}
    for task in tasks:
        config = load(f"{task}.yaml")
        kwargs = config["lmms_eval_specific_kwargs"]
        chosen = kwargs[variant] if variant in kwargs else kwargs["default"]
        function = getattr(utils, config["doc_to_text"].removeprefix("utils."))
        prompts[task] = functools.partial(function, lmms_eval_specific_kwargs=chosen)
    return prompts


CELLS_LONGEST_FIRST = "|".join(sorted(CELL_NAMES, key=len, reverse=True))
REFERENCES = re.compile(rf"\b(?:(?P<color>{'|'.join(COLORS)})|(?<=at the )(?P<cell>{CELLS_LONGEST_FIRST}))\b")
COLOR_WORDS = re.compile(rf"\b(?:{'|'.join(COLORS)})\b")
OPTION_LINES = re.compile(r"^\(?(?P<letter>[A-E])[.)] (?P<text>.+)$", re.MULTILINE)


def referents(question: str, category: str, scene: dict) -> list[tuple[dict | None, tuple[int, int] | None]]:
    """What a question names, in order (a colour word or "at the <cell>"): the scene's shape it names (None for
    an absent colour) and the span of the words; a count question is about all shapes, named by no word."""
    if category == "count":
        return [(item, None) for item in scene["shapes"]]
    by_color = {item["color"]: item for item in scene["shapes"]}
    by_cell = {CELL_NAMES[item["cell"]]: item for item in scene["shapes"]}
    return [
        (by_color.get(m["color"]) if m["color"] else by_cell[m["cell"]], m.span())
        for m in REFERENCES.finditer(question)
    ]


CELL_PHRASES = [f"at the {cell}" for cell in CELL_NAMES]


def train_tokenizer(texts, vocab_size: int, special_tokens: tuple[str, ...] = (), phrases: tuple[str, ...] = ()):
    """A byte-level BPE (`tokenizers.Tokenizer`) of ``vocab_size`` tokens learned on ``texts`` (the training
    prompts and answers), with ``special_tokens`` after ``BYTE_SPECIALS`` and each of ``phrases`` one token
    (the image model's "at the <cell>": prompts 2-3x shorter than in bytes, and a place named by one token
    that can look the place up itself; issue 11's notes: the byte tokenizer's models never learned to)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=BYTE_SPECIALS + list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    backend.add_tokens(list(phrases))
    return backend


def training_texts(template: str, scenes) -> list[str]:
    """The prompts (in ``template``) and answers of ``scenes`` (as `training_docs` yields them), and their
    descriptions: what the image model's tokenizer is learned on."""
    prompts, texts = task_prompts(), []
    for scene, _, docs in scenes:
        texts.append(describe(scene))
        for task, task_docs in docs.items():
            texts += [template.format(prompt=prompts[task](doc)) + " " + doc["answer"] for doc in task_docs]
            texts += [doc["answer"] for doc in task_docs]  # an answer follows "ASSISTANT:" with no space
    return texts


def clip_texts(model_cfg, clips) -> list[str]:
    """The prompts and answers of ``clips`` (as `smoke_video.training_clips` yields them), as the video model
    is prompted: what its tokenizer is learned on."""
    prompts, texts = task_prompts(VIDEO_TASK_DIR, TASK_KINDS, model_cfg.lmms_eval_prompts), []
    for clip, docs in clips:
        time_text = clip_time_text(model_cfg, clip)
        for task, task_docs in docs.items():
            for doc in task_docs:
                prompt = model_cfg.prompt_template.format(prompt=prompts[task](doc), time_instruction=time_text)
                texts += [prompt, answer_letter(task, doc)]
    return texts


def clip_time_text(model_cfg, clip: dict) -> str:
    """The time instruction the harness gives ``clip`` (its times as `video.read_video` reads them)."""
    timestamps, duration = frame_times(clip["frames"], clip["fps"], model_cfg.video.frames)
    return time_instruction(model_cfg.video.time_instruction, timestamps, duration)


def answer_letter(task: str, doc: dict) -> str:
    """The letter of ``doc``'s right option in the smoke video ``task``."""
    if task == "smoke_longvideobench":
        return "ABCDE"[doc["correct_choice"]]
    if task == "smoke_videomme":
        return doc["answer"]
    return "ABCDE"[doc["candidates"].index(doc["answer"])]
