"""Entry point: `python run.py [model=...] [pruner=...] [benchmark=...] [budget=N] [limit=N]`.

Hydra composes configs/config.yaml; `python run.py --cfg job` prints the composed config.
Sweeps: `python run.py -m +experiment=table1` (or any Hydra multirun, e.g. `-m budget=16,32,64`)
runs every job in this process with the basic launcher; the exit status is the worst job's.
Exit status: 0 ok, 1 some sample failed, 2 bad config / missing weights or data (before any work).
"""

import importlib.util
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from evoprune.harness import sweep  # noqa: F401 - registers the config resolver experiments use

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
GROUPS = ("model", "pruner", "benchmark", "experiment")
exit_status = 0


def config_roots(argv: list[str]) -> list[Path]:
    """configs/ and the folders a ``hydra.searchpath=[...]`` override adds (``file://`` paths, ``pkg://``
    packages: a pruner living in another package keeps its configs there)."""
    roots = [CONFIG_DIR]
    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        if key != "hydra.searchpath":
            continue
        for entry in value.strip("[]").split(","):
            entry = entry.strip().strip("'\"")
            if entry.startswith("pkg://"):
                try:
                    spec = importlib.util.find_spec(entry.removeprefix("pkg://"))
                except ModuleNotFoundError:
                    spec = None
                roots += [Path(folder) for folder in (spec.submodule_search_locations or [])] if spec else []
            elif entry:
                roots.append(Path(entry.removeprefix("file://")))
    return roots


def check_group_choices(argv: list[str]) -> str | None:
    """The error for a ``group=choice`` override naming no config in any <root>/<group>/, else None."""
    roots = config_roots(argv)
    for arg in argv:
        key, sep, choice = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or "," in choice or "(" in choice:
            continue
        options = sorted({path.stem for root in roots for path in (root / key).glob("*.yaml")})
        if choice not in options:
            where = ", ".join(f"{'configs' if root == CONFIG_DIR else root}/{key}/" for root in roots)
            return f"{key}={choice!r} is not one of: {', '.join(options)} ({where})"
    return None


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> int:
    global exit_status
    from evoprune.harness.models import ModelUnavailableError
    from evoprune.harness.runner import DataUnavailableError, evaluate
    from evoprune.harness.settings import ConfigError
    from evoprune.harness.sweep import apply_cell

    try:
        code = evaluate(apply_cell(cfg))
    except (ConfigError, ModelUnavailableError, DataUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    exit_status = max(exit_status, code)
    return code


if __name__ == "__main__":
    problem = check_group_choices(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
    sys.exit(exit_status)
