"""Checks on ``run.py``'s command line, before Hydra composes a run: every ``group=choice`` names a
config that exists, and every other override names a key the composed config has.

Hydra itself refuses an unknown key (``prunr=evoprune``: "Key 'prunr' is not in struct", exit 1) and
suggests ``+prunr=evoprune``, which adds a key nothing reads: an unpruned run that exits 0. Here every
unknown key, with or without ``+`` / ``++`` / ``~``, is refused with the closest valid names, before any
work. Allowed additions are the documented ``+experiment=…`` and ``+cell=…``; anything under ``hydra``
(``hydra.searchpath=…``, ``hydra/launcher=…``) is Hydra's own and left to it. An override Hydra cannot
parse, or a config it cannot compose, is left to Hydra's own message (these checks return None).
"""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

from omegaconf import OmegaConf

from evoprune.harness.common.paths import CONFIG_DIR

GROUPS = ("model", "pruner", "benchmark", "experiment")
# Keys a run may add with `+` (docs/reproducing.md: sweeps and their cells).
ADDABLE = ("experiment", "cell")
_MISSING = object()


def config_roots(argv: list[str]) -> list[Path]:
    """configs/ and the folders a ``hydra.searchpath=[...]`` override adds (``file://`` paths, ``pkg://``
    packages: a pruner living in another package keeps its configs there). An entry that names no folder
    raises `SearchPathError` (Hydra would only warn, then say the pruner does not exist)."""
    roots = [CONFIG_DIR]
    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        if key != "hydra.searchpath":
            continue
        for entry in value.strip("[]").split(","):
            entry = entry.strip().strip("'\"")
            if entry.startswith("pkg://"):
                roots += _package_folders(entry)
            elif entry:
                folder = Path(entry.removeprefix("file://"))
                if not folder.is_dir():
                    raise SearchPathError(f"hydra.searchpath entry {entry!r}: {folder} is not a folder")
                roots.append(folder)
    return roots


class SearchPathError(ValueError):
    """A ``hydra.searchpath`` entry names no folder and no importable package."""


def _package_folders(entry: str) -> list[Path]:
    package = entry.removeprefix("pkg://")
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SearchPathError(
            f"hydra.searchpath entry {entry!r}: no importable package {package!r} (make it importable: "
            "`pip install -e <your project>` or its parent folder on PYTHONPATH, and an __init__.py in each folder)"
        )
    return [Path(folder) for folder in spec.submodule_search_locations]


def check_group_choices(argv: list[str]) -> str | None:
    """The error for a ``group=choice`` override naming no config in any <root>/<group>/, or for a search path
    entry naming no folder, else None."""
    try:
        roots = config_roots(argv)
    except SearchPathError as error:
        return str(error)
    for arg in argv:
        key, sep, choice = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or "," in choice or "(" in choice:
            continue
        options = sorted({path.stem for root in roots for path in (root / key).glob("*.yaml")})
        if choice not in options:
            where = ", ".join(f"{'configs' if root == CONFIG_DIR else root}/{key}/" for root in roots)
            return f"{key}={choice!r} is not one of: {', '.join(options)} ({where})"
    return None


def parse_overrides(argv: list[str]):
    """Hydra's parsed overrides of a ``run.py`` command line (its flags, e.g. ``-m``, ``--cfg job``, left out)."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    known, rest = get_args_parser().parse_known_args(argv)
    return OverridesParser.create().parse_overrides([*known.overrides, *(a for a in rest if not a.startswith("-"))])


def _is_hydras(key: str) -> bool:
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def _first_choice(override) -> str:
    """The override as ``[+]key=value`` with a sweep's first value (enough to compose the config's shape)."""
    value = next(iter(override.sweep_string_iterator())) if override.is_sweep_override() else override.value()
    prefix = "+" if override.is_add() else ""
    return f"{prefix}{override.key_or_group}={value}"


def _closest(key: str, cfg) -> str:
    """What to suggest for the unknown dotted ``key``: the closest names at the deepest level that exists."""
    parts = key.split(".")
    node, path = cfg, []
    for part in parts[:-1]:
        child = node.get(part) if OmegaConf.is_dict(node) else None
        if not OmegaConf.is_dict(child):
            break
        node, path = child, [*path, part]
    missing = parts[len(path)]
    names = [str(name) for name in node.keys()]
    prefix = ".".join(path) + "." if path else ""
    close = difflib.get_close_matches(missing, names, n=3, cutoff=0.5)
    if close:
        return "closest: " + ", ".join(prefix + name for name in close)
    return f"valid keys{' under ' + prefix.rstrip('.') if path else ''}: " + ", ".join(prefix + n for n in names)


def check_override_keys(argv: list[str]) -> str | None:
    """The error for the first override naming a key the composed config lacks (or adding one it has), else None."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        overrides = parse_overrides(argv)
    except HydraException:
        return None  # Hydra's own parser reports it, with its own message
    shaping = [o for o in overrides if not o.is_delete() and (o.key_or_group in GROUPS or o.key_or_group in ADDABLE)]
    hydras = [o.input_line for o in overrides if _is_hydras(o.key_or_group) and not o.is_sweep_override()]
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[*hydras, *(_first_choice(o) for o in shaping)])
    except (HydraException, OmegaConfBaseException):
        return None  # the run's own composition reports it
    for override in overrides:
        key = override.key_or_group
        if _is_hydras(key) or key in GROUPS or (key in ADDABLE and override.is_add()):
            continue
        exists = OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING
        if override.is_add() and exists:
            return f"{override.input_line!r} adds {key!r}, which the config already has; drop the '+' to set it"
        if not exists:
            return (
                f"unknown config key {key!r} (in {override.input_line!r}); {_closest(key, cfg)}. "
                "`python run.py --cfg job` prints the composed config"
            )
    return None


def check_command_line(argv: list[str]) -> str | None:
    """The first problem with ``run.py``'s overrides (a group choice, then a key), else None."""
    return check_group_choices(argv) or check_override_keys(argv)
