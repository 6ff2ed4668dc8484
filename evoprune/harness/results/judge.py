"""GPT-judge policy for the image suite (lmms-eval 0.7.3).

MM-Vet is always scored by a GPT judge. MMBench (``mmbench_en_dev``, ``mmbench_cn_dev``) asks
its judge only for answers its letter parser cannot read, and when the judge fails it fills
them with a random letter. Offline, stock lmms-eval therefore reports MM-Vet as 0 and MMBench
with random guesses mixed in. This module makes the no-judge case explicit:

* MM-Vet: answers are generated and kept in the logged samples, but the task runs with
  lmms-eval's predict-only ``bypass`` metric, so nothing is scored and no API is called.
* MMBench: answers are parsed with :func:`evoprune.harness.results.mcq.parse_option_letter`; an answer
  it cannot read is scored wrong and counted in ``needs_judge``. Circular-evaluation rows
  (index >= 1e6) are grouped with their question as MMBench does.

With a judge configured, lmms-eval's stock judge path runs unchanged; this module only writes
the environment variables lmms-eval reads. It cannot count MMBench answers that the stock path
filled with random letters after judge failures (that happens inside lmms-eval's aggregation);
for MM-Vet it counts samples whose judge call failed (lmms-eval scores them 0).

Only the task names in :data:`JUDGED_TASKS` are handled. Other judge-backed lmms-eval tasks
(the ``mmbench`` group, ``mmbench_*_test``, ...) pass through untouched.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from evoprune.harness.results.mcq import parse_option_letter

MMVET = "mmvet"
MMBENCH_TASKS = ("mmbench_en_dev", "mmbench_cn_dev")
JUDGED_TASKS = (MMVET, *MMBENCH_TASKS)

# lmms-eval 0.7.3's default judge model (tasks/mmvet/utils.py, tasks/mmbench/en_utils.py).
DEFAULT_JUDGE_MODEL = "gpt-4o-2024-11-20"
CHAT_COMPLETIONS = "/chat/completions"
# MMBench's circular-evaluation copies of question i carry index i + k * 1e6.
CIRCULAR_OFFSET = 1_000_000
# MMBench's stock parser (MMBench_Evaluator.build_choices) matches option text for A-D only.
MMBENCH_TEXT_OPTIONS = "ABCD"

# With no judge, lmms-eval's MM-Vet utils still build an OpenAI client when the task is loaded,
# and the installed openai client (3.x) refuses to build one without a key; lmms-eval's "dummy"
# judge builds no client. MMBench reads API_TYPE too but only uses it in the judge path.
NO_JUDGE_ENV = {"API_TYPE": "dummy"}

NO_JUDGE_MMVET = "not scored (no judge)"
NO_JUDGE_MMBENCH = "none (unparsed answers scored wrong)"


@dataclass(frozen=True)
class JudgeConfig:
    """Where the GPT judge lives. ``configured`` is true when an API key is set.

    Only OpenAI-compatible chat-completions servers (``api_type="openai"``) are supported:
    lmms-eval's MMBench and MM-Vet code read Azure settings in incompatible forms.
    ``api_url`` is the base URL (``https://host/v1``); a URL ending in ``/chat/completions``
    is cut back to its base. ``None`` keeps lmms-eval's default (api.openai.com).
    """

    api_type: str = "openai"
    api_url: str | None = None
    api_key: str | None = None
    model: str = DEFAULT_JUDGE_MODEL

    def __post_init__(self) -> None:
        if self.api_type != "openai":
            raise ValueError(
                f"judge.api_type={self.api_type!r} is not supported; use 'openai' "
                "(any OpenAI-compatible chat-completions server)"
            )
        if self.api_url is not None and self.api_url.rstrip("/").endswith(CHAT_COMPLETIONS):
            object.__setattr__(self, "api_url", self.api_url.rstrip("/")[: -len(CHAT_COMPLETIONS)])

    @property
    def configured(self) -> bool:
        return bool(self.api_key)

    @classmethod
    def resolve(cls, section: Mapping[str, Any] | None = None, environ: Mapping[str, str] = os.environ) -> JudgeConfig:
        """Build from a config section; a missing or null field falls back to lmms-eval's env var.

        Fallbacks: api_type <- API_TYPE, api_url <- OPENAI_API_URL, api_key <- OPENAI_API_KEY,
        model <- MODEL_VERSION. An empty string (``api_key: ""``) means "unset" and does not fall
        back, so a run can be forced judge-free while a key sits in the environment. Note that
        importing lmms-eval loads a ``.env`` file from the working directory into the environment.
        """
        section = section or {}

        def pick(field: str, env_var: str) -> str | None:
            value = section.get(field)
            return environ.get(env_var) if value is None else value

        return cls(
            api_type=pick("api_type", "API_TYPE") or "openai",
            api_url=pick("api_url", "OPENAI_API_URL") or None,
            api_key=pick("api_key", "OPENAI_API_KEY") or None,
            model=pick("model", "MODEL_VERSION") or DEFAULT_JUDGE_MODEL,
        )


def judge_in_effect(task_names: Iterable[str], section: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The judge settings a run of ``task_names`` uses, environment fallbacks included (the key only as
    set or not), or None when no task uses a judge: part of a run's identity, since a judge (or none)
    changes MM-Vet's and MMBench's scores."""
    if not set(task_names) & set(JUDGED_TASKS):
        return None
    judge = JudgeConfig.resolve(section)
    return {
        "api_type": judge.api_type,
        "api_url": judge.api_url,
        "model": judge.model,
        "api_key": "<set>" if judge.configured else None,
    }


@dataclass(frozen=True)
class JudgePlan:
    """The judge policy applied to a list of task names: see :func:`plan_tasks`."""

    judge: JudgeConfig
    names: tuple[str, ...]
    env: dict[str, str]
    notes: dict[str, str]

    @property
    def tasks(self) -> list[str | dict[str, Any]]:
        """The ``tasks`` argument for ``simple_evaluate``, built afresh on every access because
        lmms-eval pops the ``task`` key out of dict configs it loads."""
        if self.judge.configured:
            return list(self.names)
        return [_offline_task(name) for name in self.names]

    @contextmanager
    def environment(self) -> Iterator[None]:
        """Set ``env`` in ``os.environ`` for the block, then restore what was there."""
        saved = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key)
                else:
                    os.environ[key] = value


def plan_tasks(task_names: Iterable[str], judge: JudgeConfig) -> JudgePlan:
    """Apply the judge policy to ``task_names``.

    No judge: ``tasks`` turns MM-Vet and MMBench into lmms-eval dict task configs (the yaml task
    with ``process_results``/``metric_list`` overridden); other names stay strings. lmms-eval
    loads dict configs as simple (non-chat) tasks whatever the model is, so the model must have
    ``is_simple = True``; ``env`` selects lmms-eval's offline "dummy" judge so MM-Vet can load.
    Judge: ``tasks`` are the names unchanged and ``env`` holds the variables lmms-eval reads.
    Either way lmms-eval reads ``env`` when it loads the tasks (``get_task_dict``, or
    ``simple_evaluate`` given names/dicts), so load them within ``plan.environment()``.
    """
    names = tuple(task_names)
    if not judge.configured:
        return JudgePlan(judge, names, dict(NO_JUDGE_ENV), _offline_notes(names))
    return JudgePlan(judge, names, _judge_env(judge, names), _judge_notes(names, judge))


def _offline_task(name: str) -> str | dict[str, Any]:
    if name == MMVET:
        return {
            "task": MMVET,
            "process_results": None,
            "metric_list": [{"metric": "bypass", "aggregation": "bypass", "higher_is_better": True}],
        }
    if name in MMBENCH_TASKS:
        return {
            "task": name,
            "process_results": mmbench_regex_process_results,
            "metric_list": [
                {"metric": "regex_acc", "aggregation": mmbench_circular_accuracy, "higher_is_better": True},
                {"metric": "needs_judge", "aggregation": mmbench_needs_judge, "higher_is_better": False},
            ],
        }
    return name


def _offline_notes(names: tuple[str, ...]) -> dict[str, str]:
    notes = {}
    if MMVET in names:
        notes[MMVET] = (
            "answers generated and kept in the logged samples; "
            "not scored: MM-Vet needs a GPT judge and none is configured"
        )
    for name in MMBENCH_TASKS:
        if name in names:
            notes[name] = (
                "scored by the offline letter parser; answers it cannot read (MMBench would ask its "
                "GPT judge) are scored wrong and counted in needs_judge"
            )
    return notes


def _judge_env(judge: JudgeConfig, names: tuple[str, ...]) -> dict[str, str]:
    """Env for lmms-eval's judges. OPENAI_API_URL means the full endpoint to MMBench but the base
    URL to MM-Vet (llm_judge OpenAIProvider), so a custom URL cannot serve both in one run."""
    env = {"API_TYPE": judge.api_type, "OPENAI_API_KEY": judge.api_key, "MODEL_VERSION": judge.model}
    if judge.api_url is None:
        return env
    has_mmbench = any(name in MMBENCH_TASKS for name in names)
    if has_mmbench and MMVET in names:
        raise ValueError(
            "a custom judge.api_url cannot serve MMBench and MM-Vet in one lmms-eval run "
            "(OPENAI_API_URL is the chat-completions endpoint for MMBench, the base URL for MM-Vet); "
            "evaluate them in separate runs"
        )
    env["OPENAI_API_URL"] = judge.api_url + CHAT_COMPLETIONS if has_mmbench else judge.api_url
    return env


def _judge_notes(names: tuple[str, ...], judge: JudgeConfig) -> dict[str, str]:
    notes = {}
    if MMVET in names:
        notes[MMVET] = f"scored by lmms-eval's GPT judge ({judge.model}); failed judge calls score 0 and are counted"
    for name in MMBENCH_TASKS:
        if name in names:
            notes[name] = (
                f"unparsed answers sent to lmms-eval's GPT judge ({judge.model}); lmms-eval replaces "
                "judge failures with a random letter and this is not counted"
            )
    return notes


def _presented(value: Any) -> bool:
    """Whether MMBench shows this option in the prompt (mmbench_evals.create_options_prompt)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return str(value) not in ("", "nan")


def mmbench_regex_process_results(doc: Mapping[str, Any], results: list[str]) -> dict[str, dict[str, Any]]:
    """Per-answer record for the no-judge MMBench metrics; ``letter`` is None when unreadable."""
    prediction = results[0].strip()
    options = {key: str(doc[key]) for key in MMBENCH_TEXT_OPTIONS if _presented(doc.get(key))}
    record = {
        "index": int(doc["index"]),
        "answer": doc["answer"],
        "prediction": prediction,
        "letter": parse_option_letter(prediction, options),
    }
    return {"regex_acc": record, "needs_judge": record}


def mmbench_circular_accuracy(records: list[dict[str, Any]]) -> float:
    """Percent of questions whose every circular copy was read and correct (None = wrong).

    Like MMBench, copies whose question (index < 1e6) is absent are ignored; NaN when no
    question is present (possible with a small ``limit``).
    """
    copies = defaultdict(list)
    for record in records:
        copies[record["index"] % CIRCULAR_OFFSET].append(record)
    questions = sorted({record["index"] for record in records if record["index"] < CIRCULAR_OFFSET})
    if not questions:
        return math.nan
    hits = [all(copy["letter"] == copy["answer"] for copy in copies[index]) for index in questions]
    return 100.0 * sum(hits) / len(hits)


def mmbench_needs_judge(records: list[dict[str, Any]]) -> int:
    """Number of answers the parser could not read."""
    return sum(record["letter"] is None for record in records)


def summarize_results(results: Mapping[str, Any], judge: JudgeConfig) -> dict[str, dict[str, Any]]:
    """Per-task metric entries from ``simple_evaluate``'s return value (run with log_samples=True).

    Metric keys lose lmms-eval's ``,none`` filter suffix; ``alias``, standard errors and null
    metrics (MMBench's ``submission``) are dropped.
    """
    return {name: _entry(name, metrics, results, judge) for name, metrics in results["results"].items()}


def _entry(name: str, metrics: Mapping[str, Any], results: Mapping[str, Any], judge: JudgeConfig) -> dict[str, Any]:
    if name == MMVET and not judge.configured:
        return {"status": NO_JUDGE_MMVET}
    if name == MMVET:
        samples = results["samples"][MMVET]
        failures = sum(sample["gpt_eval_score"]["eval_model"] == "" for sample in samples)
        return {"score": metrics["gpt_eval_score,none"], "judge": judge.model, "judge_failures": failures}
    if name in MMBENCH_TASKS and not judge.configured:
        return {
            "accuracy": metrics["regex_acc,none"],
            "needs_judge": metrics["needs_judge,none"],
            "judge": NO_JUDGE_MMBENCH,
        }
    if name in MMBENCH_TASKS:
        return {"accuracy": metrics["gpt_eval_score,none"], "judge": judge.model}
    return {
        key.removesuffix(",none"): value
        for key, value in metrics.items()
        if key != "alias" and "_stderr" not in key and value is not None
    }
