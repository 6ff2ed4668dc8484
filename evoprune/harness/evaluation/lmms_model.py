"""The harness's lmms-eval model: LLaVA through `pipeline.generate`, one sample at a time.

Unlike lmms-eval's stock ``llava_hf`` wrapper, a failing sample is never turned into a silent
empty answer: its exception is recorded as a `SampleRecord` error (with the reason), the answer
lmms-eval scores is the visible marker `ERROR_ANSWER` (scored wrong), and the runner counts it
and exits non-zero. Only ``generate_until`` tasks with one visual per sample are supported: one
PIL image, or one video file path (what lmms-eval's video tasks' ``doc_to_visual`` returns), which
covers every benchmark of the paper. An unreadable video is such a sample error.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm import tqdm

from evoprune.harness.inference.pipeline import generate
from evoprune.harness.inference.pruning import Pruner
from evoprune.harness.inference.runtime import EAGER, WARMUP_NEW_TOKENS, Runtime
from evoprune.harness.models.loading import LoadedModel
from evoprune.harness.results.resume import Journal

ERROR_ANSWER = "[sample error: see samples.jsonl]"
DEFAULT_MAX_NEW_TOKENS = 128


@dataclass
class SampleRecord:
    """What the model side knows about one request; the runner joins it with lmms-eval's scores."""

    task: str
    doc_id: int
    prompt: str
    answer: str | None = None
    times: dict[str, float] = field(default_factory=dict)
    visual_tokens_before: int | None = None
    visual_tokens_after: int | None = None  # visual tokens reaching the LLM, newlines not counted
    newline_tokens: int | None = None
    frames: int | None = None
    error: str | None = None
    from_journal: bool = False  # answered by an earlier, interrupted process of the same run
    graphs_compiled: int = 0  # torch.compile graphs built while this sample was timed (runtime=compiled)

    def to_dict(self) -> dict:
        return asdict(self)


def _single_visual(visuals) -> Image.Image | str:
    """The sample's one visual: a PIL image or a video file path."""
    items = [v for v in (visuals if isinstance(visuals, (list, tuple)) else [visuals]) if v is not None]
    if len(items) != 1 or not isinstance(items[0], (Image.Image, str)):
        kinds = [type(v).__name__ for v in items]
        raise ValueError(f"expected exactly one PIL image or one video path per sample, got {len(items)}: {kinds}")
    return items[0]


def _visuals_of(doc_to_visual, doc):
    """The task's visuals for ``doc``; a task that exits the process instead of raising (lmms-eval's
    Video-MME does when a video file is missing) becomes an exception, so the run goes on."""
    try:
        return doc_to_visual(doc)
    except SystemExit as err:
        raise RuntimeError(f"the task's doc_to_visual called sys.exit({err.code!r}): its visual is missing") from None


def _generation_limits(gen_kwargs: dict) -> tuple[int, list[str]]:
    if gen_kwargs.get("do_sample"):
        raise ValueError("do_sample=True requested, but this harness decodes greedily only")
    until = gen_kwargs.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    return int(gen_kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)), until


class PrunedLlava(lmms):
    """An lmms-eval model instance wrapping a loaded LLaVA and a pruner.

    ``warmup`` untimed generations on the first request run before timing starts, so one-off
    costs (CUDA context, kernel selection, allocator growth, the ``runtime``'s compilation) do not land
    in the first sample; each decodes at least `WARMUP_NEW_TOKENS` tokens, the runtime may ask for more
    (`Runtime.warmup_generations`), and ``warmup_seconds`` is what they took.
    With a ``journal``, samples it holds are answered from it, and every newly answered sample is
    appended to it before the next one starts.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        pruner: Pruner,
        warmup: int = 1,
        progress: bool = True,
        journal: Journal | None = None,
        runtime: Runtime = EAGER,
        desc: str = "samples",
    ):
        super().__init__()
        self.desc = desc  # the progress bar's label
        self.loaded = loaded
        self.pruner = pruner
        self.warmup = warmup
        self.progress = progress
        self.journal = journal
        self.runtime = runtime
        self.warmup_seconds = 0.0
        self.warmed_up = False
        self.records: list[SampleRecord] = []
        self.total = 0  # requests handed to generate_until
        self.answered_all = False  # generate_until returned an answer for every request

    def _answer(self, request: Instance) -> SampleRecord:
        question, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        if self.journal is not None:
            journaled = self.journal.lookup(task, doc_id, question)
            if journaled is not None:
                return SampleRecord(**{**journaled, "from_journal": True})
        record = self._compute(request)
        if self.journal is not None:
            self.journal.append(record.to_dict())
        return record

    def _compute(self, request: Instance) -> SampleRecord:
        question, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        record = SampleRecord(task=task, doc_id=int(doc_id), prompt=question)
        try:
            visual = _single_visual(_visuals_of(doc_to_visual, self.task_dict[task][split][doc_id]))
            max_new_tokens, until = _generation_limits(dict(gen_kwargs))
            sample_id = f"{task}/{doc_id}"
            self._warm_up(visual, question, max_new_tokens, until, sample_id)
            result = generate(
                self.loaded, self.pruner, visual, question, max_new_tokens, until, sample_id, self.runtime
            )
        except Exception as err:  # recorded per sample, counted and reported by the runner
            record.error = f"{type(err).__name__}: {err}"
            record.answer = ERROR_ANSWER
            return record
        record.answer = result.text
        record.times = result.times
        record.visual_tokens_before = result.visual_tokens_before
        record.visual_tokens_after = result.visual_tokens_after
        record.newline_tokens = result.newline_tokens
        record.frames = result.frames
        record.graphs_compiled = result.graphs_compiled
        return record

    def _warm_up(self, visual, question: str, max_new_tokens: int, until: list[str], sample_id: str) -> None:
        """Before the first computed sample only."""
        if self.warmed_up:
            return
        start = time.perf_counter()
        for _ in range(max(self.warmup, self.runtime.warmup_generations)):
            generate(
                self.loaded,
                self.pruner,
                visual,
                question,
                max(max_new_tokens, WARMUP_NEW_TOKENS),
                until,
                sample_id,
                self.runtime,
                min_new_tokens=WARMUP_NEW_TOKENS,
            )
        self.warmup_seconds += time.perf_counter() - start
        self.warmed_up = True

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers = []
        errors = resumed = 0
        self.total += len(requests)
        with tqdm(requests, desc=self.desc, unit="sample", disable=not self.progress, dynamic_ncols=True) as bar:
            for request in bar:
                record = self._answer(request)
                self.records.append(record)
                errors += record.error is not None
                resumed += record.from_journal
                bar.set_postfix(errors=errors, resumed=resumed)
                answers.append(record.answer)
        self.answered_all = len(self.records) == self.total
        return answers

    def loglikelihood(self, requests):
        raise TypeError("PrunedLlava answers generate_until tasks only; this task asks for loglikelihood")

    def generate_until_multi_round(self, requests):
        raise TypeError("PrunedLlava answers single-round generate_until tasks only; this task is multi-round")
