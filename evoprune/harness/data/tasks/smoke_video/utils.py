"""lmms-eval hooks for the smoke video tasks (smoke_mvbench_*, smoke_longvideobench, smoke_videomme).

Each task copies the prompt format and the per-sample metric (same key, same fields) of the real
lmms-eval 0.7.3 task it stands in for: mvbench, longvideobench_val_v and videomme, so
`evoprune.harness.results.video_metrics` scores both alike. Unlike the real ones, every aggregation divides
by all samples and never guesses: a reply with no readable option letter is wrong (LongVideoBench's
random letter is replaced by parsed_pred ""), and the number of such replies is logged. The visual
is the clip's absolute path, as the real tasks return theirs; the model decodes it. lmms-eval loads
this file by path, so it imports the harness with absolute imports only.
"""

from __future__ import annotations

import string
from pathlib import Path

from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer
from loguru import logger

from evoprune.harness.results.video_metrics import longvideobench_letter, mvbench_letter

DATA_DIR = Path(__file__).resolve().parent / "data"
VIDEOMME_INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
    "Respond with only the letter (A, B, C, or D) of the correct option."
)


def _video(relative: str) -> list[str]:
    """[absolute path] of a clip; FileNotFoundError (naming it) when the file is missing."""
    path = DATA_DIR / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"smoke video {path} is missing: run evoprune.harness.data.smoke_video.ensure_smoke_video_data()"
        )
    return [str(path)]


def _log_unparsable(task: str, unparsable: int, total: int) -> None:
    logger.info(f"{task}: {unparsable} of {total} replies had no readable option letter (scored wrong)")


# --- smoke_mvbench_*: MVBench ------------------------------------------------------------


def mvbench_doc_to_visual(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> list[str]:
    return _video(doc["video"])


def mvbench_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict) -> str:
    """Same as lmms-eval's mvbench_doc_to_text: "Question:<q>\\nOption:\\n(A) ...\\n" + post prompt."""
    options = "".join(
        f"({letter}) {text}\n" for letter, text in zip(string.ascii_uppercase, doc["candidates"], strict=False)
    )
    return f"Question:{doc['question']}\nOption:\n{options}{lmms_eval_specific_kwargs['post_prompt']}"


def mvbench_process_results(doc: dict, results: list[str]) -> dict:
    """MVBench's record: the raw reply, the correct letter, and 1/0 for a match (`mvbench_letter`)."""
    gt_answer = string.ascii_uppercase[doc["candidates"].index(doc["answer"])]
    pred = results[0]
    return {
        "mvbench_accuracy": {
            "pred_answer": pred,
            "gt_answer": gt_answer,
            "score": int(mvbench_letter(pred) == gt_answer),
        }
    }


def mvbench_aggregate(results: list[dict]) -> float:
    """Accuracy in percent over all samples (MVBench divides by the non-empty replies only)."""
    _log_unparsable("smoke_mvbench", sum(mvbench_letter(r["pred_answer"]) is None for r in results), len(results))
    return 100.0 * sum(r["score"] for r in results) / len(results)


# --- smoke_longvideobench: LongVideoBench (longvideobench_val_v) --------------------------


def _lvb_options(doc: dict) -> list[str]:
    """The options up to the first "N/A" (lmms-eval's process_results stops there)."""
    options = []
    for k in range(5):
        if doc[f"option{k}"] == "N/A":
            break
        options.append(doc[f"option{k}"])
    return options


def longvideobench_doc_to_visual(doc: dict) -> list[str]:
    return _video(doc["video_path"])


def longvideobench_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict) -> str:
    """Same as lmms-eval's longvideobench_doc_to_text without subtitles: "<q>\\nA. ...\\n" + post."""
    options = "\n".join(
        f"{letter}. {text}" for letter, text in zip(string.ascii_uppercase, _lvb_options(doc), strict=False)
    )
    kwargs = lmms_eval_specific_kwargs
    return f"{kwargs['pre_prompt']}{doc['question']}\n{options}\n{kwargs['post_prompt']}"


def longvideobench_process_results(doc: dict, results: list[str]) -> dict:
    """LongVideoBench's lvb_acc record; parsed_pred is "" (never a random letter) when none is readable."""
    record = {
        "id": doc["id"],
        "duration_group": doc["duration_group"],
        "question_category": doc["question_category"],
        "answer": string.ascii_uppercase[doc["correct_choice"]],
        "parsed_pred": longvideobench_letter(results[0]) or "",
    }
    return {"lvb_acc": record}


def longvideobench_aggregate(results: list[dict]) -> float:
    """Share correct (0-1, as lmms-eval's LongVideoBench reports it) over all samples."""
    _log_unparsable("smoke_longvideobench", sum(r["parsed_pred"] == "" for r in results), len(results))
    return sum(r["parsed_pred"] == r["answer"] for r in results) / len(results)


# --- smoke_videomme: Video-MME (videomme, no subtitles) -----------------------------------


def videomme_doc_to_visual(doc: dict) -> list[str]:
    return _video(f"videos/{doc['videoID']}.mp4")


def videomme_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict) -> str:
    """Same as lmms-eval's videomme_doc_to_text (default format; "The best answer is:" without a post prompt)."""
    post_prompt = lmms_eval_specific_kwargs.get("post_prompt", "The best answer is:")
    options = "\n".join(doc["options"])
    return f"{VIDEOMME_INSTRUCTION}\n{doc['question']}\n{options}\n{post_prompt}"


def videomme_process_results(doc: dict, results: list[str]) -> dict:
    """Video-MME's record, its letter read by lmms-eval's own extract_mcq_answer ("" when none)."""
    pred_answer = extract_mcq_answer(results[0], choices=["A", "B", "C", "D"])
    record = {
        "question_id": doc["question_id"],
        "duration": doc["duration"],
        "category": doc["domain"],
        "sub_category": doc["sub_category"],
        "task_category": doc["task_type"],
        "pred_answer": pred_answer,
        "answer": doc["answer"],
        "score": 1.0 if pred_answer.lower() == doc["answer"].lower() else 0.0,
        "videoID": doc["videoID"],
    }
    return {"videomme_perception_score": record}


def videomme_aggregate(results: list[dict]) -> float:
    """Accuracy in percent over all samples (as Video-MME's)."""
    _log_unparsable("smoke_videomme", sum(r["pred_answer"] == "" for r in results), len(results))
    return 100.0 * sum(r["score"] for r in results) / len(results)
