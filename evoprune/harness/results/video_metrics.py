"""The paper's Table 2 video numbers, derived from the harness's per-sample rows.

A row (one line of ``samples.jsonl``) has ``task``, ``answer`` (the model's text), ``error`` (str or
None) and ``score`` (lmms-eval's per-sample values by metric name). Which derived metrics apply is
decided by the per-sample keys present, so the same code scores lmms-eval 0.7.3's real tasks and
the smoke tasks that copy their formats:

- ``mvbench_accuracy`` (MVBench, any of its subtasks) -> ``mvbench_test``: the mean over all samples
  of all subtasks. lmms-eval divides by the non-empty predictions of each subtask and has no group
  score; here every sample counts.
- ``lvb_acc`` (longvideobench_val_v) -> ``longvideobench_val``, ``longvideobench_perception``,
  ``longvideobench_relation``. lmms-eval's parser substitutes a random letter when it finds none, so
  the raw answer is re-parsed with its rules (`longvideobench_letter`) and an unparsable answer is
  wrong. The split follows the LongVideoBench paper (arXiv 2407.15754, Table 2): Perception (L1) =
  S2E S2O S2A E2O O2E T2E T2O T2A; Relation (L2) = E3E O3O SSS SOS SAA T3E T3O TOS TAA. (Its header
  says L1 has 3,204 questions although its L1 rows add up to 3,197; L2's 3,474 adds up.)
- ``videomme_perception_score`` (videomme) -> ``videomme_overall``, ``videomme_short``,
  ``videomme_medium``, ``videomme_long``, by the sample's ``duration``. lmms-eval's extracted letter
  (``pred_answer``, "" when none) is deterministic and used as logged.

Each derived metric is ``{value, samples, correct, errors, unparsable}``: value = 100 * correct /
samples (None without samples); a row with an error counts as wrong and in ``errors`` (not in
``unparsable``); an answer without a readable option letter counts as wrong and in ``unparsable``.
Where lmms-eval's logged verdict can be recomputed (MVBench's score, LongVideoBench's parsed letter
when one is readable) a disagreement raises ValueError instead of being papered over. This module
cannot score anything but these three formats, and knows nothing of subtitles or frame counts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

MVBENCH_KEY = "mvbench_accuracy"
LVB_KEY = "lvb_acc"
VIDEOMME_KEY = "videomme_perception_score"
LVB_PERCEPTION = ("S2E", "S2O", "S2A", "E2O", "O2E", "T2E", "T2O", "T2A")
LVB_RELATION = ("E3E", "O3O", "SSS", "SOS", "SAA", "T3E", "T3O", "TOS", "TAA")
VIDEOMME_DURATIONS = ("short", "medium", "long")


# --- answer parsing (lmms-eval 0.7.3's rules, re-implemented) ------------------------------

_MVBENCH_PUNCT = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
_MVBENCH_COMMA_DIGITS = re.compile(r"(\d)(,)(\d)")
_MVBENCH_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: a lookahead, so every "." not before a digit
_LVB_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
)


def mvbench_letter(text: str) -> str | None:
    """The option letter MVBench's ``mcq_acc`` reads off a reply, or None when it reads none.

    Its rules (tasks/mvbench/utils.py): a reply "X. text" gives X; otherwise punctuation is removed
    or replaced by spaces (MVBench's VQA-style rules, including removing at most 32 periods), outer
    quotes and brackets are stripped, and the first standalone letter A-E in any case is taken (so
    the article "a" in "a red circle" reads as A, as in MVBench itself).
    """
    text = text.strip()
    match = re.match(r"^([A-E])\.\s*(.+)$", text, re.IGNORECASE)
    if match:
        return match.group(1).upper()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    out = text
    for mark in _MVBENCH_PUNCT:
        spaced = f"{mark} " in text or f" {mark}" in text or _MVBENCH_COMMA_DIGITS.search(text) is not None
        out = out.replace(mark, "" if spaced else " ")
    out = _MVBENCH_PERIOD.sub("", out, count=32)
    out = out.strip("'").strip('"').strip(")").strip("(").strip().lower()
    match = re.search(r"\b([A-E])\b", out, re.IGNORECASE)
    return match.group(1).upper() if match else None


def longvideobench_letter(text: str) -> str | None:
    """The letter LongVideoBench's parser reads off a reply, or None where lmms-eval would pick a
    random one: answer prefixes ("The best answer is", "Best option:", ...) are deleted, then the
    first capital A-E anywhere is taken (an "A" starting a sentence included), whatever the
    number of options."""
    text = text.strip()
    for prefix in _LVB_PREFIXES:
        text = text.replace(prefix, "")
    match = re.search(r"[ABCDE]", text)
    return match[0] if match else None


# --- per-row verdicts ---------------------------------------------------------------------


def _mvbench_verdict(row: dict) -> tuple[bool, bool]:
    """(correct, unparsable) of an MVBench row; checks the re-parse against lmms-eval's score."""
    sample = row["score"][MVBENCH_KEY]
    letter = mvbench_letter(row["answer"])
    correct = letter is not None and letter == sample["gt_answer"]
    if correct != bool(sample["score"]):
        raise ValueError(
            f"MVBench sample of task {row['task']!r}: answer {row['answer']!r} re-parsed as {letter!r} "
            f"(gt {sample['gt_answer']!r}) but lmms-eval scored it {sample['score']!r}"
        )
    return correct, letter is None


def _lvb_verdict(row: dict) -> tuple[bool, bool]:
    """(correct, unparsable) of a LongVideoBench row, ignoring lmms-eval's random substitutes."""
    sample = row["score"][LVB_KEY]
    letter = longvideobench_letter(row["answer"])
    if letter is not None and row["error"] is None and letter != sample["parsed_pred"]:
        raise ValueError(
            f"LongVideoBench sample {sample['id']!r}: answer {row['answer']!r} re-parsed as {letter!r} "
            f"but lmms-eval parsed {sample['parsed_pred']!r}"
        )
    return letter is not None and letter == sample["answer"], letter is None


def _videomme_verdict(row: dict) -> tuple[bool, bool]:
    """(correct, unparsable) of a Video-MME row, from lmms-eval's extracted letter."""
    sample = row["score"][VIDEOMME_KEY]
    return bool(sample["score"]), sample["pred_answer"] == ""


def _lvb_level(sample: dict) -> str:
    category = sample["question_category"]
    if category in LVB_PERCEPTION:
        return "perception"
    if category in LVB_RELATION:
        return "relation"
    raise ValueError(f"LongVideoBench sample {sample.get('id')!r} has unknown question_category {category!r}")


def _videomme_duration(sample: dict) -> str:
    duration = sample["duration"]
    if duration not in VIDEOMME_DURATIONS:
        raise ValueError(
            f"Video-MME sample {sample.get('question_id')!r} has duration {duration!r}, not one of {VIDEOMME_DURATIONS}"
        )
    return duration


_VERDICTS: dict[str, Callable[[dict], tuple[bool, bool]]] = {
    MVBENCH_KEY: _mvbench_verdict,
    LVB_KEY: _lvb_verdict,
    VIDEOMME_KEY: _videomme_verdict,
}

# derived metric -> (per-sample key, which of those samples it counts)
DERIVED: dict[str, tuple[str, Callable[[dict], bool]]] = {
    "mvbench_test": (MVBENCH_KEY, lambda sample: True),
    "longvideobench_val": (LVB_KEY, lambda sample: True),
    "longvideobench_perception": (LVB_KEY, lambda sample: _lvb_level(sample) == "perception"),
    "longvideobench_relation": (LVB_KEY, lambda sample: _lvb_level(sample) == "relation"),
    "videomme_overall": (VIDEOMME_KEY, lambda sample: _videomme_duration(sample) in VIDEOMME_DURATIONS),
    **{
        f"videomme_{duration}": (VIDEOMME_KEY, lambda sample, d=duration: _videomme_duration(sample) == d)
        for duration in VIDEOMME_DURATIONS
    },
}


def in_derived(name: str, row: dict) -> bool:
    """Whether ``row`` counts in derived metric ``name`` (KeyError for an unknown name)."""
    key, member = DERIVED[name]
    return key in row["score"] and member(row["score"][key])


def derived_metrics(rows: Iterable[dict]) -> dict[str, dict]:
    """Every derived metric whose per-sample key occurs in ``rows``: name -> {value, samples,
    correct, errors, unparsable}; value in percent, None when the metric has no samples (e.g. no
    relation question among the rows)."""
    rows = list(rows)
    present = {key for row in rows for key in row["score"]}
    result = {}
    for name, (key, _) in DERIVED.items():
        if key not in present:
            continue
        members = [row for row in rows if in_derived(name, row)]
        verdicts = [_VERDICTS[key](row) for row in members]
        errors = sum(row["error"] is not None for row in members)
        correct = sum(ok and row["error"] is None for row, (ok, _) in zip(members, verdicts, strict=True))
        unparsable = sum(bad and row["error"] is None for row, (_, bad) in zip(members, verdicts, strict=True))
        result[name] = {
            "value": 100.0 * correct / len(members) if members else None,
            "samples": len(members),
            "correct": correct,
            "errors": errors,
            "unparsable": unparsable,
        }
    return result
