"""Read a multiple-choice answer letter off a model's free-text reply, MMBench-style.

Same rules as lmms-eval 0.7.3 ``MMBench_Evaluator.can_infer`` (tasks/mmbench/mmbench_evals.py),
re-implemented so the harness needs neither lmms-eval nor pandas for it:

1. letter matching: the reply, split on whitespace, holds exactly one of the letters A-E as a
   bare word ("B"), or, failing that, exactly one decorated form of a letter such as "A.",
   "(C)", "B)." or ":D". A bare "A" in a reply of more than three words is read as the article
   ("A red circle ...") and then only its decorated forms count.
2. option-text matching: exactly one option's text occurs (case-insensitively, as a substring)
   in the reply.

It cannot interpret anything else. Where MMBench would ask its GPT judge, this returns None.
MMBench then falls back to a random letter if the judge is unavailable; callers must count a
None as wrong, never guess. Like MMBench, a lone letter with no option behind it (E, or D on a
three-option question) is still returned as the answer; it is then simply wrong.
"""

from __future__ import annotations

LETTERS = "ABCDE"
# (prefix, suffix) decorations tried in MMBench's order; the first one that names exactly
# one letter wins.
DECORATIONS = (
    ("", "."),
    ("", ","),
    ("", ":"),
    ("", ")"),
    ("", ")."),
    ("(", ")"),
    ("(", ")."),
    (":", ""),
    (":", ","),
    (":", "."),
    (":", ")"),
    (":", ")."),
)


def parse_option_letter(prediction: str, options: dict[str, str]) -> str | None:
    """Return the option letter the reply names unambiguously, else None.

    ``options`` maps letters to option texts (only the options the question has).
    """
    return _letter_from_tokens(prediction.split()) or _letter_from_text(prediction, options)


def _letters_with(tokens: list[str], prefix: str = "", suffix: str = "") -> list[str]:
    """Letters whose decorated form appears as a whole token."""
    return [letter for letter in LETTERS if f"{prefix}{letter}{suffix}" in tokens]


def _letter_from_tokens(tokens: list[str]) -> str | None:
    """Letter named by exactly one bare or decorated letter token (MMBench can_infer_option)."""
    bare = _letters_with(tokens)
    article = "A" in tokens and len(tokens) > 3
    if len(bare) == 1 and not article:
        return bare[0]
    for prefix, suffix in DECORATIONS:
        found = _letters_with(tokens, prefix, suffix)
        if len(found) == 1:
            return found[0]
    return None


def _letter_from_text(prediction: str, options: dict[str, str]) -> str | None:
    """Letter of the only option whose text occurs in the reply (MMBench can_infer_text)."""
    reply = prediction.lower()
    found = [letter for letter, text in options.items() if str(text).lower() in reply]
    return found[0] if len(found) == 1 else None
