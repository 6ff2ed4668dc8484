"""lmms-eval hooks for the smoke tasks (smoke_vqa, smoke_yesno, smoke_mcq) and the shapes tasks
(shapes_vqa, shapes_yesno, shapes_mcq: the same formats on evoprune.harness.data.shapes_data's scenes).

Each task copies the prompt format and scoring of the real lmms-eval 0.7.3 task it stands in
for: vqav2_val (VQA accuracy), mme (acc + acc+ per category) and mmbench_en_dev (letter
parsing; no GPT judge, so unparsed answers are counted wrong and reported as needs_judge).
lmms-eval loads this file by path, so it imports the harness with absolute imports only.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from lmms_eval.tasks._task_utils.vqa_eval_metric import EvalAIAnswerProcessor
from lmms_eval.tasks.mme.utils import parse_pred_ans
from loguru import logger
from PIL import Image

from evoprune.harness.results.mcq import parse_option_letter

DATA_DIR = Path(__file__).resolve().parent / "data"
SHAPES_DIR = Path(__file__).resolve().parent / "shapes"
MCQ_SYS_PROMPT = "There are several options:"
YESNO_SUFFIX = " Please answer yes or no."
_VQA_NORMALISER = EvalAIAnswerProcessor()


# --- shared ------------------------------------------------------------------------------


def _image(folder: Path, doc: dict) -> list[Image.Image]:
    """The doc's image as RGB. Raises (never swallows) when the file is missing or unreadable."""
    with Image.open(folder / doc["image"]) as image:
        return [image.convert("RGB")]


def smoke_doc_to_visual(doc: dict) -> list[Image.Image]:
    return _image(DATA_DIR, doc)


def shapes_doc_to_visual(doc: dict) -> list[Image.Image]:
    """The shapes suite's image (evoprune.harness.data.shapes_data)."""
    return _image(SHAPES_DIR, doc)


def _kwargs(lmms_eval_specific_kwargs: dict | None) -> tuple[str, str]:
    kwargs = lmms_eval_specific_kwargs or {}
    return kwargs.get("pre_prompt", ""), kwargs.get("post_prompt", "")


# --- smoke_vqa: VQAv2 --------------------------------------------------------------------


def vqa_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """Same as lmms-eval's vqav2_doc_to_text."""
    pre_prompt, post_prompt = _kwargs(lmms_eval_specific_kwargs)
    return f"{pre_prompt}{doc['question']}{post_prompt}"


def _vqa_normalise(text: str) -> str:
    """VQAv2's normalisation as lmms-eval's vqav2 task applies it."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _VQA_NORMALISER.process_digit_article(_VQA_NORMALISER.process_punctuation(text))


def vqa_accuracy(prediction: str, human_answers: list[str]) -> float:
    """Standard VQA accuracy: the mean over the leave-one-out subsets of the human answers of
    min(#matching answers / 3, 1), after the EvalAI normalisation (as lmms-eval's vqav2)."""
    predicted = _vqa_normalise(prediction)
    humans = [_vqa_normalise(answer) for answer in human_answers]
    scores = []
    for left_out in range(len(humans)):
        matches = sum(answer == predicted for i, answer in enumerate(humans) if i != left_out)
        scores.append(min(1.0, matches / 3))
    return statistics.mean(scores)


def vqa_process_results(doc: dict, results: list[str]) -> dict:
    return {"exact_match": vqa_accuracy(results[0], [item["answer"] for item in doc["answers"]])}


# --- smoke_yesno: MME --------------------------------------------------------------------


def yesno_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """Same as lmms-eval's mme_doc_to_text: a non-empty pre/post prompt replaces the
    question's " Please answer yes or no." suffix."""
    pre_prompt, post_prompt = _kwargs(lmms_eval_specific_kwargs)
    question = doc["question"].strip()
    if pre_prompt:
        question = pre_prompt + question.replace(YESNO_SUFFIX, "")
    if post_prompt:
        question = question.replace(YESNO_SUFFIX, "") + post_prompt
    return question


def yesno_process_results(doc: dict, results: list[str]) -> dict:
    """Scores with MME's own answer parser (yes / no / other)."""
    correct = parse_pred_ans(results[0]) == doc["answer"].lower().strip().replace(".", "")
    record = {
        "question_id": doc["question_id"],
        "image": doc["image"],
        "category": doc["category"],
        "score": float(correct),
    }
    return {"mme_perception_score": record}


def yesno_aggregate(results: list[dict]) -> float:
    """MME score: per category, acc (% of questions right) + acc+ (% of images with both
    questions right); summed over categories. Images with only one of their two questions
    (after a ``limit`` that splits a pair) are left out with a warning; NaN if none is whole."""
    pairs = defaultdict(lambda: defaultdict(list))
    for record in results:
        pairs[record["category"]][record["image"]].append(record["score"])
    total = math.nan
    for category, images in sorted(pairs.items()):
        complete = [scores for scores in images.values() if len(scores) == 2]
        if len(complete) < len(images):
            logger.warning(
                f"yes/no pairs of {category}: {len(images) - len(complete)} image(s) "
                "lack one of their two questions; left out"
            )
        if not complete:
            continue
        score = statistics.mean(100.0 * sum(s) / 2 + 100.0 * (sum(s) == 2) for s in complete)
        logger.info(f"yes/no pairs of {category}: {score:.2f}")
        total = score if math.isnan(total) else total + score
    return total


# --- smoke_mcq: MMBench ------------------------------------------------------------------


def mcq_options(doc: dict) -> dict[str, str]:
    """Letter -> text of the options the doc has (null options are absent)."""
    return {letter: doc[letter] for letter in "ABCD" if doc.get(letter) not in (None, "", "nan")}


def mcq_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """Same layout as lmms-eval's mmbench_doc_to_text, including its blank line before the
    post prompt (the post prompt starts with a newline and is joined with another)."""
    options = "\n".join(f"{letter}. {text}" for letter, text in mcq_options(doc).items())
    query = f"{doc['question']} {MCQ_SYS_PROMPT}\n{options}"
    if doc.get("hint") not in (None, "", "nan"):
        query = f"{doc['hint']} {query}"
    if lmms_eval_specific_kwargs:
        query = f"{query}\n{lmms_eval_specific_kwargs['post_prompt']}"
    return query


def mcq_process_results(doc: dict, results: list[str]) -> dict:
    """Correct only when the parsed letter is the answer; an unparsed reply is wrong and is
    counted in needs_judge (MMBench would have asked its GPT judge)."""
    letter = parse_option_letter(results[0].strip(), mcq_options(doc))
    return {"accuracy": float(letter == doc["answer"]), "needs_judge": int(letter is None)}


def mcq_accuracy(results: list[float]) -> float:
    """Accuracy in percent, as MMBench reports it."""
    return 100.0 * statistics.mean(results)


def mcq_needs_judge(results: list[int]) -> int:
    """Number of replies no letter could be read from."""
    return sum(results)
