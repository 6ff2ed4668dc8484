"""Render the paper's Figure 3: Time-To-First-Token per stage on Video-MME, Native and six methods.

    python scripts/render_fig3.py +experiment=fig3 [limit=N] [output_dir=...]

The renderer is `evoprune.harness.reports.fig3` (its docstring, shown by ``--help``, says what is drawn).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoprune.harness.common.paths import REPO_ROOT  # noqa: E402
from evoprune.harness.evaluation.sweep import renderer_main  # noqa: E402
from evoprune.harness.reports import fig3  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return renderer_main(fig3.render, fig3.__doc__, REPO_ROOT, argv)


if __name__ == "__main__":
    sys.exit(main())
