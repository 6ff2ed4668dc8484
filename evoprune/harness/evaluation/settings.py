"""Checks on the composed config that must pass before any data or model is loaded.

The top-level fields have a typed schema (`TopLevel`, an OmegaConf structured config). It is
applied here, in `check_config`, rather than in Hydra's defaults list, so a bad value ends in the
harness's own ``error: …`` line and exit status 2 instead of Hydra's generic composition error.
Types come from the schema; ranges and the checks that need the machine (device) follow it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum

from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from evoprune.harness.common.errors import ConfigError


class DType(Enum):
    auto = "auto"
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class LogLevel(Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class RuntimeName(Enum):
    eager = "eager"
    compiled = "compiled"


@dataclass
class CompileFields:
    backend: dict[str, str] = field(default_factory=dict)
    tower_mode: str | None = None
    llm_mode: str | None = None


@dataclass
class JudgeFields:
    api_type: str | None = None
    api_url: str | None = None
    api_key: str | None = None
    model: str | None = None


@dataclass
class TopLevel:
    """The types of `configs/config.yaml`'s top-level fields (their defaults and meaning live there)."""

    budget: int | None = None
    seed: int = 0
    device: str = "auto"
    dtype: DType = DType.auto
    limit: int | None = None
    warmup: int = 1
    progress: bool = True
    log_level: LogLevel = LogLevel.WARNING
    output_dir: str = "results/runs"
    resume: bool = True
    runtime: RuntimeName = RuntimeName.eager
    compile: CompileFields = field(default_factory=CompileFields)
    judge: JudgeFields = field(default_factory=JudgeFields)


# What each field accepts, for messages (the schema's own message says the type).
ACCEPTED = {
    "budget": "an integer number of visual tokens, or null for all",
    "seed": "an integer in [0, 2**32 - 1]",
    "device": "auto, cpu, cuda or cuda:<index>",
    "dtype": ", ".join(d.value for d in DType),
    "limit": "a positive integer (samples per task) or null for all samples",
    "warmup": "an integer >= 0",
    "progress": "true or false",
    "log_level": ", ".join(level.value for level in LogLevel),
    "output_dir": "a directory path",
    "resume": "true or false",
    "runtime": ", ".join(r.value for r in RuntimeName),
    "compile": "a mapping with backend (a torch.compile backend per device type), tower_mode, llm_mode",
    "judge": "a mapping with api_type, api_url, api_key, model (strings or null)",
}
SEED_MAX = 2**32 - 1


def check_types(cfg) -> None:
    """Apply the `TopLevel` schema to ``cfg``'s top-level fields; the first bad one raises."""
    schema = OmegaConf.structured(TopLevel)  # merging leaves it as it is
    for spec in fields(TopLevel):
        if spec.name not in cfg:
            raise ConfigError(f"the config has no top-level field {spec.name!r}; configs/config.yaml must define it")
        try:
            OmegaConf.merge(schema, {spec.name: cfg[spec.name]})
        except ValidationError as err:
            shown = "secret" if spec.name == "judge" else repr(OmegaConf.to_container(cfg, resolve=True)[spec.name])
            raise ConfigError(
                f"{spec.name}={shown} is invalid ({err.msg.splitlines()[0]}); accepted: {ACCEPTED[spec.name]}"
            ) from None


def check_budget(budget, num_visual_tokens: int, pruner_method: str, what: str = "visual tokens per image") -> None:
    """``budget`` is null (keep all) or an integer in [1, num_visual_tokens] with a pruner set.

    ``what`` names the tokens the limit counts, for the message.
    """
    if budget is None:
        return
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise ConfigError(
            f"budget={budget!r} is not an integer; use an integer in [1, {num_visual_tokens}] "
            f"or budget=null to keep all {num_visual_tokens} visual tokens"
        )
    if not 1 <= budget <= num_visual_tokens:
        raise ConfigError(
            f"budget={budget} is outside the valid range [1, {num_visual_tokens}] for pruner {pruner_method!r} "
            f"(it selects among the model's {num_visual_tokens} {what}; budget=null keeps all)"
        )
    if pruner_method == "none":
        raise ConfigError(
            f"budget={budget} needs a pruner, but pruner=none keeps all {num_visual_tokens} visual tokens; "
            f"pick another pruner (see configs/pruner/) or set budget=null"
        )


def check_limit(limit) -> None:
    """``limit`` is null (all samples) or a positive integer."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"limit={limit!r} must be a positive integer (samples per task) or null for all samples")


def check_limit_fits_tasks(limit, benchmark_cfg) -> None:
    """A ``limit`` keeps whole groups of every task scored over groups of questions
    (``benchmark.limit_multiple_of``: task -> group size)."""
    if limit is None:
        return
    for task, size in (benchmark_cfg.get("limit_multiple_of") or {}).items():
        if task in benchmark_cfg.tasks and limit % size:
            lower, higher = limit - limit % size, limit - limit % size + size
            shown = f"limit={lower} or limit={higher}" if lower else f"limit={higher}"
            raise ConfigError(
                f"limit={limit} splits the question groups of task {task} ({size} questions each; its score needs "
                f"whole groups); accepted: a multiple of {size}, e.g. {shown}"
            )


def check_ranges(cfg) -> None:
    """Ranges of the typed fields (after `check_types`)."""
    if not 0 <= cfg.seed <= SEED_MAX:
        raise ConfigError(f"seed={cfg.seed} is out of range; accepted: {ACCEPTED['seed']}")
    if cfg.warmup < 0:
        raise ConfigError(f"warmup={cfg.warmup} is negative; accepted: {ACCEPTED['warmup']}")
    if cfg.runtime == "compiled" and cfg.warmup < 1:
        raise ConfigError(
            f"runtime=compiled needs warmup >= 1, got warmup={cfg.warmup}: compilation happens in the warm-up, "
            "never inside a timed sample"
        )
    check_limit(cfg.limit)


def check_device(name: str):
    """The torch device ``name`` stands for on this machine; ConfigError when it is not usable here."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device={name!r} is not a device; accepted: {ACCEPTED['device']}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={name!r} is not supported; accepted: {ACCEPTED['device']}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available on this machine; use device=auto or device=cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_compile_backend(cfg, device) -> None:
    """With ``runtime=compiled``, ``compile.backend`` names a torch.compile backend for ``device``'s type."""
    if cfg.runtime != "compiled":
        return
    import torch

    backend = cfg.compile.backend.get(device.type)
    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise ConfigError(
            f"compile.backend.{device.type}={backend!r} is not a torch.compile backend; accepted: {', '.join(known)}"
        )


def check_media(model_cfg, benchmark_cfg) -> None:
    """The model reads what the benchmark's samples carry (images or videos)."""
    model_media, benchmark_media = model_cfg.get("media", "image"), benchmark_cfg.get("media", "image")
    if model_media != benchmark_media:
        raise ConfigError(
            f"model={model_cfg.name} reads {model_media}s but benchmark={benchmark_cfg.name} holds "
            f"{benchmark_media}s; pick a {benchmark_media} model (see configs/model/, media: {benchmark_media}) "
            f"or a {model_media} benchmark"
        )


def check_video(model_cfg) -> None:
    """A video model's ``video.frames``, ``video.frame_batch`` and ``video.decode_workers`` are integers >= 1."""
    video = model_cfg.get("video")
    if video is None:
        return
    for key, default in (("frames", None), ("frame_batch", None), ("decode_workers", 1)):
        value = video.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.video.{key}={value!r} must be an integer >= 1")


def budget_limit(cfg) -> tuple[int, str]:
    """The largest budget the configured pruner accepts on this model, and what those tokens are."""
    from evoprune.harness.inference.pruning import pruner_class

    unit = "frame" if cfg.model.get("media", "image") == "video" else "image"
    if pruner_class(cfg.pruner).in_encoder:
        return cfg.model.encoder_tokens, f"vision-encoder patch tokens per {unit} (it acts on the tower's tokens)"
    return cfg.model.num_visual_tokens, f"visual tokens per {unit} that reach the LLM"


def check_config(cfg) -> None:
    """Every check that needs no model, data or network."""
    limit, what = budget_limit(cfg)
    check_budget(cfg.budget, limit, cfg.pruner.method, what)
    check_media(cfg.model, cfg.benchmark)
    check_video(cfg.model)
    check_types(cfg)
    check_ranges(cfg)
    check_limit_fits_tasks(cfg.limit, cfg.benchmark)
    check_compile_backend(cfg, check_device(cfg.device))
