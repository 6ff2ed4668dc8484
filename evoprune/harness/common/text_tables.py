"""Markdown and LaTeX tables of string cells: plain text, no dependency beyond Python (the device check
imports them on machines that have torch and transformers only)."""

from __future__ import annotations


def tex_escape(text: str) -> str:
    """``text`` safe in a LaTeX table cell."""
    for plain, tex in (
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("—", "--"),
        ("~", r"$\sim$"),
        ("§", r"\S{}"),
    ):
        text = text.replace(plain, tex)
    return text


def markdown_table(rows: list[list[str]], left: int = 1) -> str:
    """A Markdown table of string cells (the header row first; the first ``left`` columns left-aligned)."""
    rule = ["---"] * left + ["---:"] * (len(rows[0]) - left)
    return "\n".join("| " + " | ".join(row) + " |" for row in [rows[0], rule, *rows[1:]])


def latex_table(rows: list[list[str]], left: int = 1) -> str:
    """A booktabs tabular of string cells (the header row first; the first ``left`` columns left-aligned)."""
    lines = [r"\begin{tabular}{" + "l" * left + "r" * (len(rows[0]) - left) + "}", r"\toprule"]
    lines += [" & ".join(map(tex_escape, rows[0])) + r" \\", r"\midrule"]
    lines += [" & ".join(map(tex_escape, row)) + r" \\" for row in rows[1:]]
    return "\n".join([*lines, r"\bottomrule", r"\end{tabular}"]) + "\n"
