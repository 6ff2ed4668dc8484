"""The paper's Tables 1-3 (results/paper/*.csv) and how the paper computes their Avg. columns, Acc. and Rel.

The formulas were worked out from the paper's own rows (arXiv 2603.03681); SPECS holds them as data:

* Table 1 (LLaVA-1.5-7B, images):
  Acc. = (VQAv2 + MME/20 + MMB-EN + MMB-CN + MM-Vet) / 4. MME (perception, out of 2000) is put on a 0-100
  scale as MME/20, and the sum of the FIVE benchmarks is divided by FOUR, which is why Native's Acc. (76.5)
  is higher than four of its five scores. Plain means over five columns (MME/20 or MME/28), or over four
  with MME or MM-Vet left out, match none of the 19 Acc. cells; this one matches 18.
* Table 2 (LLaVA-Video-7B): Acc. = mean(MVBench test, LongVideoBench val, Video-MME w/o sub); the
  perception/relation and short/medium/long sub-columns do not count.
* Table 3 (ablation): Acc. = mean(MVBench, LongVideoBench, VideoMME), the same three headline numbers.
* Rel. (all tables) = 100 * Acc. / Acc.(Native), a ratio of the averages, not the mean of per-benchmark
  ratios that the captions suggest ("mean relative accuracy"): on Table 1 the ratio matches 15 of 19 Rel.
  cells and the mean of ratios 2; on Table 2 it is 14 against 11.

Printed values are one decimal; the only exact ties (Table 1 Acc. 72.25 and 64.55) are printed rounded
down, so round_like_paper rounds halves down.

Residual. No formula over the printed cells reproduces every Acc./Rel. cell: the paper evidently averaged
unrounded scores, so a printed average can differ from the average of printed scores by a rounding step.
Cells the formulas above miss (computed - printed):

* Table 1 (Acc. 18/19, Rel. 15/19, |residual| <= 0.065): Acc. VisPruner@64 69.8375 vs 69.9 (-0.063);
  Rel. DART@64 -0.064, VisPruner@32 +0.061, DART@32 +0.054, DivPrune@32 -0.063.
* Table 2 (Acc. 15/19, Rel. 14/19, |Acc. residual| <= 0.067, |Rel. residual| <= 0.19): Acc. FasterVLM@32
  +0.067, CDPruner@32 +0.067, EvoPrune@32 -0.067, EvoPrune@16 +0.067; Rel. DART@64 -0.082, EvoPrune@64
  -0.103, CDPruner@32 +0.143, EvoPrune@32 -0.188, DART@16 -0.075.
* Table 3 (Acc. 4/5, Rel. 3/5, same bounds as Table 2): Acc. w/o Attn&Div +0.067; Rel. w/o Attn&Div
  +0.161, EvoPrune -0.103 (the EvoPrune row is Table 2's 64-per-frame row).

RESIDUAL holds these bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_DOWN, Decimal

import pandas as pd

from evoprune.harness.common.paths import RESULTS_DIR

# The paper's names of the compared methods, by pruner.method (figures and benchmark tables).
METHOD_LABELS = {
    "none": "Native",
    "fastervlm": "FasterVLM",
    "vispruner": "VisPruner",
    "dart": "DART",
    "divprune": "DivPrune",
    "cdpruner": "CDPruner",
    "evoprune": "EvoPrune",
    # Baselines the paper does not report.
    "tome": "ToMe",
    "visionzip": "VisionZip",
    "pooling": "Pooling",
    "random": "Random",
}

PAPER_DIR = RESULTS_DIR / "paper"


@dataclass(frozen=True)
class Spec:
    """Which columns count toward Acc., each with the factor that puts it on a 0-100 scale, and what the
    paper divides the sum of all the scaled columns by."""

    scales: Mapping[str, float]
    divisor: float


SPECS: dict[str, Spec] = {
    "table1": Spec({"VQAv2": 1.0, "MME": 1 / 20, "MMB-EN": 1.0, "MMB-CN": 1.0, "MM-Vet": 1.0}, divisor=4),
    "table2": Spec({"MVBench test": 1.0, "LongVideoBench val": 1.0, "Video-MME w/o sub": 1.0}, divisor=3),
    "table3": Spec({"MVBench": 1.0, "LongVideoBench": 1.0, "VideoMME": 1.0}, divisor=3),
}

# Largest |computed - printed| over all rows of each table (see the module docstring).
RESIDUAL: dict[str, dict[str, float]] = {
    "table1": {"Acc.": 0.065, "Rel.": 0.065},
    "table2": {"Acc.": 0.067, "Rel.": 0.19},
    "table3": {"Acc.": 0.067, "Rel.": 0.19},
}


@dataclass(frozen=True)
class Aggregate:
    acc: float | None
    rel: float | None  # percent of Native's Acc.
    left_out: tuple[str, ...]  # counted columns that were None/NaN in scores or native
    complete: bool  # no counted column was left out


def _spec(table: str) -> Spec:
    if table not in SPECS:
        raise ValueError(f"unknown paper table {table!r}; accepted: {', '.join(SPECS)}")
    return SPECS[table]


def load_paper_table(name: str) -> pd.DataFrame:
    """The paper's table as printed, one row per method x budget (budget <NA> for Native)."""
    _spec(name)
    return pd.read_csv(PAPER_DIR / f"{name}.csv", dtype={"method": str, "label": str, "budget": "Int64"})


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def aggregate(table: str, scores: Mapping[str, float | None], native: Mapping[str, float | None] | None) -> Aggregate:
    """The paper's Acc. and Rel. (unrounded) for one row.

    A counted column that is None (or NaN) in ``scores`` or ``native`` is left out of both Acc. and Rel.,
    never counted as 0; the divisor shrinks in proportion, so Table 1's sum/4 becomes sum * 5/4 / len.
    """
    spec = _spec(table)
    left_out = tuple(
        col for col in spec.scales if _missing(scores.get(col)) or (native is not None and _missing(native.get(col)))
    )
    used = [col for col in spec.scales if col not in left_out]
    if not used:
        return Aggregate(None, None, left_out, False)
    divisor = spec.divisor * len(used) / len(spec.scales)

    def average(values: Mapping[str, float | None]) -> float:
        return sum(values[col] * spec.scales[col] for col in used) / divisor

    acc = average(scores)
    rel = None
    if native is not None and (native_acc := average(native)) != 0:
        rel = 100 * acc / native_acc
    return Aggregate(acc, rel, left_out, not left_out)


def round_like_paper(value: float) -> float:
    """One decimal, as printed: halves go down (Table 1 prints 72.25 as 72.2 and 64.55 as 64.5)."""
    exact = Decimal(repr(round(value, 9)))
    return float(exact.quantize(Decimal("0.1"), rounding=ROUND_HALF_DOWN))
