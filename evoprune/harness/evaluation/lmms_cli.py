"""The harness model under lmms-eval's own CLI: ``lmms-eval --model evoprune --model_args pruner=evoprune,budget=32``.

lmms-eval 0.7.3 finds plugin models through the entry-point group ``lmms_eval.models``: it loads each
entry point and registers what it yields, a `ModelManifest` (or an iterable of them, or a callable
returning either; the entry point's own name is not used). pyproject.toml points ``evoprune`` at
`evoprune.harness.evaluation.lmms_entry.manifest`, which maps the model id ``evoprune`` to `EvoPruneLMM`.

``--model_args`` are the overrides ``python run.py`` takes (``model=``, ``pruner=``, ``budget=``,
``device=``, ``dtype=``, ``seed=``, ``pruner.<field>=``, ``hydra.searchpath=[...]``, ...): the config is
composed from configs/ and checked as run.py does, before the model loads. The tasks come from
lmms-eval's ``--tasks`` (this repo's smoke suites need ``--include_path evoprune/harness/data/tasks/smoke``).

A failing sample is answered `ERROR_ANSWER` (scored wrong) and its reason recorded, as under run.py;
at the end a summary goes to stderr, and with ``records=<file.jsonl>`` every sample's record (answer,
visual token counts, timings, error) is written there. lmms-eval's CLI exit status does not reflect
sample errors (nor a model that failed to build: it logs the exception and exits 0, unless run with
``--verbosity DEBUG``, which re-raises it and exits 1); run.py's does (1 when any sample failed).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from lmms_eval import utils as lmms_eval_utils

from evoprune.harness.common.errors import ConfigError
from evoprune.harness.common.outputs import write_jsonl
from evoprune.harness.common.paths import CONFIG_DIR
from evoprune.harness.evaluation.lmms_entry import MODEL_ID
from evoprune.harness.evaluation.lmms_model import ERROR_ANSWER, PrunedLlava
from evoprune.harness.evaluation.runner import load_pruned_model
from evoprune.harness.evaluation.settings import check_config
from evoprune.harness.inference.pruning import build_pruner, locate_pruner_weights
from evoprune.harness.inference.runtime import build_runtime
from evoprune.harness.models.weights import locate_weights

MAX_LISTED_ERRORS = 20

# run.py settings that lmms-eval's CLI decides itself, with where to set them instead.
NOT_MODEL_ARGS = {
    "benchmark": "lmms-eval's --tasks (and --include_path) choose the tasks",
    "limit": "use lmms-eval's --limit",
    "output_dir": "use lmms-eval's --output_path, and records=<file.jsonl> for the per-sample records",
    "resume": "lmms-eval's CLI does not resume runs; run.py does",
    "log_level": "use lmms-eval's --verbosity",
    "judge": "lmms-eval's judged tasks read its env vars (OPENAI_API_KEY, OPENAI_API_URL, MODEL_VERSION)",
    "experiment": "experiments are run.py sweeps (python run.py -m +experiment=...)",
    "cell": "experiment cells are run.py sweeps (python run.py -m +experiment=...)",
}


def _override_value(value) -> str:
    """A model_args value (lmms-eval turned ``true``/``32``/``0.3`` into Python values) as Hydra override text."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def hydra_overrides(model_args: dict) -> list[str]:
    """``{"pruner": "evoprune", "budget": 32}`` → ``["pruner=evoprune", "budget=32"]``; run.py settings
    that lmms-eval's CLI owns are refused by name."""
    overrides = []
    for key, value in model_args.items():
        field = key.lstrip("+~").split(".", 1)[0]
        if field in NOT_MODEL_ARGS:
            raise ConfigError(f"model_args {key}={value!r} is not taken by the evoprune model: {NOT_MODEL_ARGS[field]}")
        overrides.append(f"{key}={_override_value(value)}")
    return overrides


def compose_run_config(overrides: list[str]):
    """configs/config.yaml composed with ``overrides``, as ``python run.py <overrides>`` composes it; the
    benchmark (unused here: its media is checked against the model's) is the smoke suite of the model's media."""
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
            media = cfg.model.get("media", "image")
            if cfg.benchmark.get("media", "image") != media:
                cfg = compose("config", overrides=[*overrides, f"benchmark=smoke_{media}"])
    except HydraException as err:
        reason, _, options = str(err).split("\nConfig search path:")[0].partition("\n\nAvailable options in ")
        reason = " ".join(reason.split())
        if options:  # Hydra lists a group's configs one per line: keep the message on one line
            group, _, names = options.partition(":")
            reason += f"; accepted {group}: {', '.join(names.split())}"
        raise ConfigError(f"model_args {','.join(overrides)}: {reason}") from None
    return cfg


def _check_batch(batch_size, max_batch_size) -> None:
    if str(batch_size) != "1":
        raise ConfigError(
            f"batch_size={batch_size!r}: the evoprune model answers one sample at a time (a batch-1 latency "
            "harness); accepted: 1"
        )
    if max_batch_size not in (None, 1):
        raise ConfigError(f"max_batch_size={max_batch_size!r}: the evoprune model runs batch 1 only; accepted: 1")


class EvoPruneLMM(PrunedLlava):
    """`PrunedLlava` built from lmms-eval ``--model_args``: compose and check the config as run.py does,
    then load the model, build the pruner and attach it.

    ``batch_size`` / ``max_batch_size`` / ``device`` are what lmms-eval's CLI adds (``--batch_size``,
    default 1; ``--max_batch_size``; ``--device``, which becomes the ``device=`` override). ``records``:
    a JSONL file for the per-sample records. The exit status of lmms-eval's CLI is 0 even when samples
    failed: read the stderr summary or the records.
    """

    def __init__(self, batch_size=1, max_batch_size=None, device=None, records=None, **model_args):
        _check_batch(batch_size, max_batch_size)
        if records is not None and (str(records).strip() == "" or Path(str(records)).is_dir()):
            raise ConfigError(f"records={records!r} must name a file to write the per-sample records to (JSONL)")
        if device is not None:
            model_args["device"] = device
        cfg = compose_run_config(hydra_overrides(model_args))
        check_config(cfg)
        pruner = build_pruner(cfg.pruner, cfg.budget)
        locate_weights(cfg.model)
        locate_pruner_weights(cfg.pruner)
        loaded, torch_device, dtype = load_pruned_model(cfg, pruner)
        runtime = build_runtime(cfg.runtime, cfg.compile, pruner, torch_device)
        super().__init__(loaded, pruner, warmup=cfg.warmup, progress=cfg.progress, runtime=runtime)
        self.cfg = cfg
        self.records_path = None if records is None else Path(str(records)).resolve()
        budget = "all" if cfg.budget is None else cfg.budget
        print(
            f"evoprune: model={cfg.model.name} pruner={cfg.pruner.name} budget={budget} device={torch_device} "
            f"dtype={str(dtype).removeprefix('torch.')} runtime={cfg.runtime}",
            file=sys.stderr,
        )
        variant = cfg.model.get("lmms_eval_prompts")
        if variant is not None:
            print(
                f"evoprune: warning: model.lmms_eval_prompts={variant!r}, but lmms-eval's CLI picks task prompts by "
                f"--model name ({MODEL_ID!r}), so tasks use their default prompts; run.py uses {variant!r}'s",
                file=sys.stderr,
            )

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        """lmms-eval's constructor call, refusing a key given both in --model_args and as a CLI flag
        with different values (lmms-eval would fail with a bare 'multiple values' TypeError)."""
        args = lmms_eval_utils.simple_parse_args_string(arg_string)
        extra = {key: value for key, value in (additional_config or {}).items() if value is not None}
        clashing = sorted(key for key in args.keys() & extra.keys() if str(args[key]) != str(extra[key]))
        if clashing:
            given = ", ".join(
                f"{key}={args[key]!r} in --model_args but {extra[key]!r} from --{key}" for key in clashing
            )
            raise ConfigError(f"conflicting settings: {given}")
        return cls(**{**args, **extra})

    def generate_until(self, requests) -> list[str]:
        answers = super().generate_until(requests)
        self.report()
        return answers

    def report(self) -> None:
        """Counts, visual tokens and each failed sample's reason on stderr; the records to ``records``."""
        failed = [record for record in self.records if record.error is not None]
        tokens = sorted({r.visual_tokens_after for r in self.records if r.visual_tokens_after is not None})
        lines = [
            f"evoprune: {len(self.records)} samples, {len(failed)} failed; visual tokens reaching the LLM per "
            f"sample: {', '.join(map(str, tokens)) or 'none'}"
        ]
        lines += [f"  {record.task} doc {record.doc_id}: {record.error}" for record in failed[:MAX_LISTED_ERRORS]]
        if len(failed) > MAX_LISTED_ERRORS:
            lines.append(f"  ... and {len(failed) - MAX_LISTED_ERRORS} more")
        if failed:
            lines.append(
                f"evoprune: warning: {len(failed)} sample(s) failed: answered {ERROR_ANSWER!r} and scored wrong; "
                "lmms-eval's exit status does not count them"
            )
        if self.records_path is not None:
            write_jsonl(self.records_path, [record.to_dict() for record in self.records])
            lines.append(f"evoprune: per-sample records: {self.records_path}")
        else:
            lines.append("evoprune: per-sample records: pass records=<file.jsonl> in --model_args to keep them")
        print("\n".join(lines), file=sys.stderr)
