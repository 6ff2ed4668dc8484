"""Render the paper's Figure 4: EvoPrune's layer schedules, accuracy and encoder time against the budget.

    python scripts/render_fig4.py +experiment=fig4 [limit=N] [output_dir=...]

The renderer is `evoprune.harness.reports.fig4` (its docstring, shown by ``--help``, says what is drawn).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoprune.harness.common.paths import REPO_ROOT  # noqa: E402
from evoprune.harness.evaluation.sweep import renderer_main  # noqa: E402
from evoprune.harness.reports import fig4  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return renderer_main(fig4.render, fig4.__doc__, REPO_ROOT, argv)


if __name__ == "__main__":
    sys.exit(main())
