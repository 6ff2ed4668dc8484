"""The file name of an experiment's rendered table or figure."""

from __future__ import annotations


def output_name(cfg) -> str:
    """``<experiment>``, or ``<experiment>_<runtime>`` for a runtime other than eager (the paper's setting keeps the
    plain name, so a compiled sweep never overwrites it)."""
    return cfg.experiment.name if cfg.runtime == "eager" else f"{cfg.experiment.name}_{cfg.runtime}"
