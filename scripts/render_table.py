"""Render an experiment's runs as the paper's table: ours, the paper's, ours − paper.

    python scripts/render_table.py +experiment=table1 [limit=N] [output_dir=...]

The renderer is `evoprune.harness.reports.paper_table` (its docstring, shown by ``--help``, says what is drawn).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoprune.harness.common.paths import REPO_ROOT  # noqa: E402
from evoprune.harness.evaluation.sweep import renderer_main  # noqa: E402
from evoprune.harness.reports import paper_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return renderer_main(paper_table.render, paper_table.__doc__, REPO_ROOT, argv)


if __name__ == "__main__":
    sys.exit(main())
