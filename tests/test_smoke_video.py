"""The offline smoke video suite (data, lmms-eval tasks, scoring) and Table 2's derived video metrics."""

from __future__ import annotations

import random
import shutil
import string
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config, file_tree, local_task_manager, read_docs, scripted_lmms

from evoprune.harness.common.outputs import write_json, write_jsonl, write_text
from evoprune.harness.data import smoke_video
from evoprune.harness.data.generated_data import read_manifest
from evoprune.harness.data.smoke_video import ensure_smoke_video_data
from evoprune.harness.evaluation.lmms_model import ERROR_ANSWER
from evoprune.harness.evaluation.runner import leaf_tasks
from evoprune.harness.results import video_metrics
from evoprune.harness.results.resume import FINAL_FILES, RUN_RECORD, completion_record, identity_config
from evoprune.harness.results.tables import MISSING, collect
from evoprune.harness.results.video_metrics import derived_metrics, longvideobench_letter, mvbench_letter

TASK_DIR = Path(smoke_video.__file__).resolve().parent / "tasks" / "smoke_video"
MVBENCH_SUBTASKS = (
    "smoke_mvbench_moving_attribute",
    "smoke_mvbench_moving_direction",
    "smoke_mvbench_object_existence",
)
TASKS = (*MVBENCH_SUBTASKS, "smoke_longvideobench", "smoke_videomme")


@pytest.fixture(scope="module")
def data_dir() -> Path:
    return ensure_smoke_video_data()


@pytest.fixture(scope="module")
def utils():
    from evoprune.harness.data.tasks.smoke_video import utils

    return utils


# --- data -----------------------------------------------------------------------------


def test_generation_is_deterministic(tmp_path, data_dir):
    """Annotations byte for byte; clips frame for frame. The mp4 bytes themselves matched in every run
    but one (a clip's H.264 stream differed once under heavy CPU load), so frames are compared decoded."""
    from decord import VideoReader

    again, first = file_tree(ensure_smoke_video_data(target_dir=tmp_path / "data")), file_tree(data_dir)
    assert sorted(again) == sorted(first) and len(again) == 36 + len(TASKS) + 1
    assert {name: again[name] for name in again if not name.endswith(".mp4")} == {
        name: first[name] for name in first if not name.endswith(".mp4")
    }
    for name in (name for name in again if name.endswith(".mp4")):
        readers = [VideoReader(str(root / name)) for root in (tmp_path / "data", data_dir)]
        assert len(readers[0]) == len(readers[1]), name
        frames = [reader.get_batch(list(range(len(reader)))).asnumpy().astype(int) for reader in readers]
        assert np.abs(frames[0] - frames[1]).mean() < 1.0, name


def test_generation_is_idempotent_and_repairs(tmp_path, monkeypatch):
    monkeypatch.setattr(smoke_video, "N_CLIPS", 4)  # small: each regeneration re-encodes every clip
    target = ensure_smoke_video_data(target_dir=tmp_path / "data")
    manifest = read_manifest(target)
    assert len(manifest["clips"]) == 4

    def regenerated() -> bool:
        (target / "marker").write_text("kept while fresh")
        ensure_smoke_video_data(target_dir=target)
        return not (target / "marker").exists()

    assert not regenerated()  # fresh: left alone
    (target / manifest["clips"][2]["video"]).unlink()
    assert regenerated()  # a listed file is missing
    (target / "manifest.json").unlink()
    assert regenerated()  # no manifest: a half-written folder
    write_json(target / "manifest.json", {**manifest, "seed": -1})
    assert regenerated()  # another seed
    assert read_manifest(target) == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_failed_generation_keeps_the_old_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(smoke_video, "N_CLIPS", 2)
    target = ensure_smoke_video_data(target_dir=tmp_path / "data")
    before = file_tree(target)

    def broken(path, frames, fps):
        raise OSError(f"disk full writing {path}")

    monkeypatch.setattr(smoke_video, "write_mp4", broken)
    with pytest.raises(OSError, match="disk full"):
        ensure_smoke_video_data(force=True, target_dir=target)
    assert file_tree(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_clips_read_back_by_decord(data_dir):
    from decord import VideoReader

    clips = read_manifest(data_dir)["clips"]
    for clip in clips:
        reader = VideoReader(str(data_dir / clip["video"]))
        width, height = clip["size"]
        assert (len(reader), reader.get_avg_fps(), reader[0].shape) == (clip["frames"], clip["fps"], (height, width, 3))
        low, high = smoke_video.LENGTHS[clip["length"]]
        assert low <= clip["frames"] <= high
    frames = [clip["frames"] for clip in clips]
    assert sum(n < 64 for n in frames) == 12 and sum(n >= 100 for n in frames) == 12
    assert {clip["fps"] for clip in clips} <= {10, 15, 20, 25} and len({clip["fps"] for clip in clips}) > 1


def _colour_at(frame: np.ndarray, centre: tuple[int, int]) -> np.ndarray:
    x, y = centre
    return frame[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(axis=0)


def test_clips_show_what_the_questions_ask(data_dir):
    """The mover is where its direction puts it at the first and last frame, in its colour; the
    newcomer is absent just before it appears and present at the end; the docs' answers match."""
    from decord import VideoReader

    for index in range(smoke_video.N_CLIPS):
        plan = smoke_video._make_clip(index, np.random.default_rng([smoke_video.SEED, 0, index]))
        mover, newcomer = plan["mover"], plan["newcomer"]
        reader = VideoReader(str(data_dir / plan["video"]))
        first, before, last = reader.get_batch([0, plan["appear"] - 1, plan["frames"] - 1]).asnumpy()
        horizontal = mover["direction"] in ("left", "right")
        start, end = (1.0, 0.0) if mover["direction"] in ("left", "up") else (0.0, 1.0)
        colour = np.array(smoke_video.COLORS[mover["color"]])
        for frame, along in ((first, start), (last, end)):
            centre = smoke_video._centre(plan, mover["lane"], along, horizontal)
            assert np.abs(_colour_at(frame, centre) - colour).max() < 40, plan["video"]
        spot = smoke_video._centre(plan, newcomer["lane"], newcomer["along"], horizontal)
        assert np.abs(_colour_at(before, spot) - np.array(plan["background"])).max() < 40
        assert np.abs(_colour_at(last, spot) - np.array(smoke_video.COLORS[newcomer["color"]])).max() < 40

        doc = read_docs(data_dir, "smoke_videomme")[index]
        truth = doc["options"]["ABCD".index(doc["answer"])][3:]
        expected = {
            "Attribute Perception": mover["color"],
            "Spatial Perception": smoke_video.DIRECTIONS[mover["direction"]],
            "Object Recognition": f"the {newcomer['color']} {newcomer['shape']}",
            "Temporal Perception": f"the {mover['color']} {mover['shape']}",
        }
        assert truth == expected[doc["task_type"]]


def test_doc_fields_and_labels(data_dir):
    assert read_manifest(data_dir)["samples"] == {**dict.fromkeys(MVBENCH_SUBTASKS, 12), **dict.fromkeys(TASKS[3:], 36)}
    for task in MVBENCH_SUBTASKS:
        for doc in read_docs(data_dir, task):
            assert set(doc) == {"video", "question", "candidates", "answer"}
            assert doc["answer"] in doc["candidates"] and 3 <= len(doc["candidates"]) <= 4
    lvb = read_docs(data_dir, "smoke_longvideobench")
    assert {len([k for k in range(5) if d[f"option{k}"] != "N/A"]) for d in lvb} == {4, 5}
    categories = {d["question_category"] for d in lvb}
    assert categories & set(video_metrics.LVB_PERCEPTION) and categories & set(video_metrics.LVB_RELATION)
    assert categories <= set(video_metrics.LVB_PERCEPTION + video_metrics.LVB_RELATION)
    assert all(d[f"option{d['correct_choice']}"] != "N/A" for d in lvb)
    videomme = read_docs(data_dir, "smoke_videomme")
    assert sorted({d["duration"] for d in videomme}) == ["long", "medium", "short"]
    assert all([o[:3] for o in d["options"]] == ["A. ", "B. ", "C. ", "D. "] for d in videomme)
    assert {d["answer"] for d in videomme} == set("ABCD")


# --- prompts and per-sample records, against lmms-eval's own ---------------------------------

REPLIES = [
    "A",
    "(B) blue",
    "C. red",
    "The best answer is D.",
    "Best answer: C",
    "a red circle",
    "I cannot tell",
    "",
    "E",
    "b",
    "." * 32 + " A.B",  # MVBench removes at most 32 periods: the 33rd keeps "A" a word of its own
    ERROR_ANSWER,
]


def test_prompts_match_lmms_eval(utils, data_dir):
    from lmms_eval.tasks.longvideobench.utils import longvideobench_doc_to_text
    from lmms_eval.tasks.mvbench.utils import mvbench_doc_to_text
    from lmms_eval.tasks.videomme.utils import videomme_doc_to_text

    mv_kwargs = {"post_prompt": "Only give the best option.\n"}
    lvb_kwargs = {"pre_prompt": "", "post_prompt": "Answer with the option's letter from the given choices directly.\n"}
    for post in ("\nAnswer with the option's letter from the given choices directly.", "The best answer is:"):
        for doc in read_docs(data_dir, "smoke_videomme"):
            kwargs = {"pre_prompt": "", "post_prompt": post}
            assert utils.videomme_doc_to_text(doc, kwargs) == videomme_doc_to_text(doc, kwargs)
    for doc in read_docs(data_dir, "smoke_longvideobench"):
        assert utils.longvideobench_doc_to_text(doc, lvb_kwargs) == longvideobench_doc_to_text(doc, lvb_kwargs)
    for task in MVBENCH_SUBTASKS:
        for doc in read_docs(data_dir, task):
            assert utils.mvbench_doc_to_text(doc, mv_kwargs) == mvbench_doc_to_text(doc, mv_kwargs)
    doc = {"question": "Which way?", "candidates": ["up", "down"], "answer": "down"}
    assert (
        utils.mvbench_doc_to_text(doc, mv_kwargs)
        == "Question:Which way?\nOption:\n(A) up\n(B) down\nOnly give the best option.\n"
    )


def test_process_results_match_lmms_eval_where_it_is_deterministic(utils, data_dir, monkeypatch):
    import lmms_eval.tasks.longvideobench.utils as lvb_real
    from lmms_eval.tasks.mvbench.utils import mvbench_process_results
    from lmms_eval.tasks.videomme.utils import videomme_process_results

    class NoRandom:
        @staticmethod
        def choice(choices):
            return "RANDOM"

    monkeypatch.setattr(lvb_real, "random", NoRandom)
    for reply in REPLIES:
        for doc in read_docs(data_dir, "smoke_videomme")[:8]:
            assert utils.videomme_process_results(doc, [reply]) == videomme_process_results(doc, [reply])
        for doc in read_docs(data_dir, "smoke_mvbench_moving_direction")[:8]:
            ours = utils.mvbench_process_results(doc, [reply])["mvbench_accuracy"]
            assert ours == mvbench_process_results(doc, [reply])["mvbench_accuracy"]
        for doc in read_docs(data_dir, "smoke_longvideobench")[:8]:
            ours = utils.longvideobench_process_results(doc, [reply])["lvb_acc"]
            theirs = lvb_real.longvideobench_process_results(doc, [reply])["lvb_acc"]
            if theirs["parsed_pred"] == "RANDOM":
                assert ours == {**theirs, "parsed_pred": ""}
            else:
                assert ours == theirs


def _capture_logs():
    from loguru import logger

    lines = []
    handler = logger.add(lines.append, format="{message}", level="INFO")
    return lines, lambda: logger.remove(handler)


def test_aggregations_count_unparsable_as_wrong(utils):
    from lmms_eval.tasks.mvbench.utils import mvbench_aggregate_results

    doc = {"video": "v.mp4", "question": "q", "candidates": ["x", "y", "z"], "answer": "y"}
    mv = [utils.mvbench_process_results(doc, [r])["mvbench_accuracy"] for r in ("B", "(B) y", "A", "", "no idea")]
    lvb_doc = {"id": "1", "duration_group": 15, "question_category": "S2E", "correct_choice": 1}
    lvb_doc |= {"option0": "x", "option1": "y", "option2": "z", "option3": "N/A", "option4": "N/A"}
    lvb = [
        utils.longvideobench_process_results(lvb_doc, [r])["lvb_acc"] for r in ("B", "I cannot tell", "no idea", "C")
    ]
    vm_doc = {"question_id": "1", "duration": "short", "domain": "Knowledge", "sub_category": "Law", "videoID": "v"}
    vm_doc |= {"task_type": "OCR Problems", "answer": "B"}
    vm = [utils.videomme_process_results(vm_doc, [r])["videomme_perception_score"] for r in ("B", "", ERROR_ANSWER)]
    lines, stop = _capture_logs()
    try:
        assert utils.mvbench_aggregate(mv) == pytest.approx(40.0)
        assert mvbench_aggregate_results(mv) == pytest.approx(50.0)  # lmms-eval leaves out the empty reply
        assert utils.longvideobench_aggregate(lvb) == pytest.approx(0.25)
        assert [r["parsed_pred"] for r in lvb] == ["B", "", "", "C"]
        assert utils.videomme_aggregate(vm) == pytest.approx(100 / 3)
    finally:
        stop()
    counts = [line.split(":")[1].split(" replies")[0].strip() for line in lines if "readable option letter" in line]
    assert counts == ["2 of 5", "2 of 4", "2 of 3"]


# --- lmms-eval loading ------------------------------------------------------------------


def test_hydra_target_generates_the_data(data_dir):
    from hydra.utils import call

    cfg = compose_config("benchmark=smoke_video").benchmark
    assert cfg.media == "video" and cfg.include_path == str(TASK_DIR.relative_to(TASK_DIR.parents[4]))
    assert call(cfg.synthetic_data) == data_dir
    assert compose_config("benchmark=video").benchmark.tasks == ["mvbench", "longvideobench_val_v", "videomme"]


def test_task_manager_builds_the_suite(data_dir):
    from lmms_eval.tasks import get_task_dict

    manager = local_task_manager(TASK_DIR)
    assert set(manager.all_subtasks) == set(TASKS) and manager.all_groups == ["smoke_mvbench"]
    tasks = leaf_tasks(get_task_dict(["smoke_mvbench", "smoke_longvideobench", "smoke_videomme"], manager))
    assert set(tasks) == set(TASKS)
    max_new_tokens = {**dict.fromkeys(MVBENCH_SUBTASKS, 16), "smoke_longvideobench": 32, "smoke_videomme": 16}
    for name, task in tasks.items():
        docs = task.test_docs()
        assert len(docs) == read_manifest(data_dir)["samples"][name]
        (path,) = task.doc_to_visual(docs[0])
        assert isinstance(path, str) and Path(path).is_absolute() and Path(path).is_file()
        assert task.config.generation_kwargs["max_new_tokens"] == max_new_tokens[name]
        assert task.config.generation_kwargs["until"] == ["\n\n"]
    prompt = tasks["smoke_longvideobench"].doc_to_text(tasks["smoke_longvideobench"].test_docs()[1])
    assert prompt.endswith("\nE. " + read_docs(data_dir, "smoke_longvideobench")[1]["option4"] + "\n" + LVB_POST)


LVB_POST = "Answer with the option's letter from the given choices directly.\n"


def test_missing_video_raises_in_copied_task_folder(tmp_path, data_dir):
    from lmms_eval.tasks import get_task_dict

    copied = tmp_path / "smoke_video"
    shutil.copytree(TASK_DIR, copied, ignore=shutil.ignore_patterns("__pycache__"))
    task = get_task_dict(["smoke_videomme"], local_task_manager(copied))["smoke_videomme"]
    doc = task.test_docs()[0]
    (copied / "data" / "videos" / f"{doc['videoID']}.mp4").unlink()
    with pytest.raises(FileNotFoundError, match=doc["videoID"]):
        task.doc_to_visual(doc)
    assert (data_dir / "videos" / f"{doc['videoID']}.mp4").is_file()


def _correct_letter(task: str, doc: dict) -> str:
    if task.startswith("smoke_mvbench"):
        return string.ascii_uppercase[doc["candidates"].index(doc["answer"])]
    if task == "smoke_longvideobench":
        return string.ascii_uppercase[doc["correct_choice"]]
    return doc["answer"]


def test_simple_evaluate_and_derived_metrics_agree(data_dir):
    """Doc 0, 3, 6, ... answered right, 1, 4, ... with a wrong letter, 2, 5, ... unparsably; the
    derived metrics over lmms-eval's logged samples reproduce the tasks' own aggregates."""
    from lmms_eval.evaluator import simple_evaluate

    def reply(model, request):
        _, _, doc_to_visual, doc_id, task, split = request.args
        doc = model.task_dict[task][split][doc_id]
        assert Path(doc_to_visual(doc)[0]).is_file()
        right = _correct_letter(task, doc)
        return [f"{right}.", "E" if right != "E" else "A", "no idea"][doc_id % 3]

    results = simple_evaluate(
        model=scripted_lmms(reply),
        tasks=["smoke_mvbench", "smoke_longvideobench", "smoke_videomme"],
        task_manager=local_task_manager(TASK_DIR),
        bootstrap_iters=0,
        log_samples=True,
    )
    scores = results["results"]
    for task in MVBENCH_SUBTASKS:
        assert scores[task]["mvbench_accuracy,none"] == pytest.approx(100 / 3)
    assert scores["smoke_longvideobench"]["lvb_acc,none"] == pytest.approx(1 / 3)
    assert scores["smoke_videomme"]["videomme_perception_score,none"] == pytest.approx(100 / 3)
    keys = ("mvbench_accuracy", "lvb_acc", "videomme_perception_score")
    rows = [
        {"task": task, "answer": s["resps"][0][0], "error": None, "score": {k: s[k] for k in keys if k in s}}
        for task, samples in results["samples"].items()
        for s in samples
    ]
    derived = derived_metrics(rows)
    assert set(derived) == set(video_metrics.DERIVED)
    assert derived["mvbench_test"] == {
        "value": pytest.approx(100 / 3),
        "samples": 36,
        "correct": 12,
        "errors": 0,
        "unparsable": 12,
    }
    assert derived["longvideobench_val"]["value"] == pytest.approx(100 / 3)
    assert derived["longvideobench_perception"]["samples"] == derived["longvideobench_relation"]["samples"] == 18
    assert [derived[f"videomme_{d}"]["samples"] for d in ("short", "medium", "long")] == [12, 12, 12]


# --- answer parsers against lmms-eval's -------------------------------------------------------


def _fuzz_replies(n: int) -> list[str]:
    rng = random.Random(7)
    alphabet = "ABCDEabcde xyz.()-,:;'\"[]!?/_12\n\t"
    words = ["The best answer is", "Best answer:", "The answer", "Best option:", "Option", "a ", "I think "]
    replies = []
    for _ in range(n):
        parts = [rng.choice(words) if rng.random() < 0.3 else rng.choice(alphabet) for _ in range(rng.randint(0, 10))]
        replies.append("".join(parts))
    return replies + REPLIES


def test_mvbench_letter_matches_mcq_acc():
    from lmms_eval.tasks.mvbench.utils import mcq_acc

    for reply in _fuzz_replies(1500):
        letter = mvbench_letter(reply.strip())
        for gt in "ABCDE":
            assert mcq_acc(gt, reply.strip()) == int(letter == gt), (reply, gt)
    assert [mvbench_letter(r) for r in ("(B) blue", "a red circle", "I cannot tell", "", "b")] == [
        "B",
        "A",
        None,
        None,
        "B",
    ]


def test_longvideobench_letter_matches_its_parser_without_the_random_fallback(monkeypatch):
    import lmms_eval.tasks.longvideobench.utils as lvb_real

    class NoRandom:
        @staticmethod
        def choice(choices):
            return None

    monkeypatch.setattr(lvb_real, "random", NoRandom)
    for reply in _fuzz_replies(1500):
        expected = lvb_real.parse_multi_choice_response(reply.strip(), list("ABCD"), {})
        assert longvideobench_letter(reply) == expected, reply
    assert longvideobench_letter("Best answer: C") == "C" and longvideobench_letter("I cannot tell") is None


def test_the_error_marker_is_unparsable():
    from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

    assert mvbench_letter(ERROR_ANSWER) is None and longvideobench_letter(ERROR_ANSWER) is None
    assert extract_mcq_answer(ERROR_ANSWER, choices=list("ABCD")) == ""


# --- derived metrics on hand-made rows in the real tasks' formats ---------------------------


def _row(task: str, key: str, answer: str, sample: dict, error: str | None = None) -> dict:
    return {"task": task, "answer": answer, "error": error, "score": {key: sample}}


def _mv(task, answer, gt, score, error=None):
    sample = {"pred_answer": answer, "gt_answer": gt, "score": score}
    return _row(task, "mvbench_accuracy", answer, sample, error)


def _lvb(answer, category, parsed_pred, gt, error=None):
    sample = {"id": f"{category}-{answer}", "duration_group": 600, "question_category": category}
    return _row("longvideobench_val_v", "lvb_acc", answer, {**sample, "answer": gt, "parsed_pred": parsed_pred}, error)


def _vm(duration, pred, gt, score, error=None, answer=None):
    sample = {"question_id": f"{duration}-{pred}", "duration": duration, "category": "Knowledge", "sub_category": "Law"}
    sample |= {"task_category": "OCR Problems", "pred_answer": pred, "answer": gt, "score": score, "videoID": "v"}
    return _row("videomme", "videomme_perception_score", pred if answer is None else answer, sample, error)


MVBENCH_ROWS = [
    _mv("mvbench_action_antonym", "(A) dog", "A", 1),
    _mv("mvbench_action_antonym", "B", "A", 0),
    _mv("mvbench_action_antonym", "", "C", 0),
    _mv("mvbench_moving_count", ERROR_ANSWER, "B", 0, error="RuntimeError: out of memory"),
    _mv("mvbench_moving_count", "C. cat", "C", 1),
]
LVB_ROWS = [
    _lvb("A", "S2E", "A", "A"),
    _lvb("I cannot tell", "T2A", "C", "C"),  # lmms-eval's random letter happened to be right
    _lvb("Best answer: D", "S2O", "D", "B"),  # "B" of "Best" is not the answer
    _lvb("D", "O2E", "D", "D"),
    _lvb("B. the blue one", "E3E", "B", "B"),
    _lvb(ERROR_ANSWER, "TAA", "E", "E", error="ValueError: bad video"),  # random letter right too
    _lvb("C", "SSS", "C", "A"),
]
VIDEOMME_ROWS = [
    _vm("short", "A", "A", 1.0),
    _vm("short", "B", "A", 0.0),
    _vm("medium", "", "C", 0.0, answer="no idea"),
    _vm("medium", "C", "C", 1.0),
    _vm("long", "D", "D", 1.0, error="RuntimeError: decode failed", answer="D"),  # an error is wrong whatever its text
    _vm("long", "B", "B", 1.0),
    _vm("long", "A", "A", 1.0),
]


def _summary(value, samples, correct, errors, unparsable):
    return {
        "value": pytest.approx(value),
        "samples": samples,
        "correct": correct,
        "errors": errors,
        "unparsable": unparsable,
    }


def test_derived_metrics_on_real_formats():
    image_row = {"task": "mme", "answer": "Yes", "error": None, "score": {"mme_perception_score": {"score": 1.0}}}
    derived = derived_metrics(MVBENCH_ROWS + LVB_ROWS + VIDEOMME_ROWS + [image_row])
    assert derived == {
        "mvbench_test": _summary(40.0, 5, 2, 1, 1),
        "longvideobench_val": _summary(300 / 7, 7, 3, 1, 1),
        "longvideobench_perception": _summary(50.0, 4, 2, 0, 1),
        "longvideobench_relation": _summary(100 / 3, 3, 1, 1, 0),
        "videomme_overall": _summary(400 / 7, 7, 4, 1, 1),
        "videomme_short": _summary(50.0, 2, 1, 0, 0),
        "videomme_medium": _summary(50.0, 2, 1, 0, 1),
        "videomme_long": _summary(200 / 3, 3, 2, 1, 0),
    }


def test_derived_metrics_present_only_for_their_tasks():
    assert derived_metrics([]) == {}
    derived = derived_metrics(LVB_ROWS[:4])
    assert set(derived) == {"longvideobench_val", "longvideobench_perception", "longvideobench_relation"}
    assert derived["longvideobench_relation"] == {
        "value": None,
        "samples": 0,
        "correct": 0,
        "errors": 0,
        "unparsable": 0,
    }


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (_mv("mvbench_action_antonym", "A", "A", 0), "re-parsed as 'A'"),
        (_lvb("B", "S2E", "C", "C"), "lmms-eval parsed 'C'"),
        (_lvb("B", "XYZ", "B", "B"), "unknown question_category 'XYZ'"),
        (_vm("brief", "A", "A", 1.0), "duration 'brief'"),
    ],
)
def test_derived_metrics_reject_inconsistent_rows(row, message):
    with pytest.raises(ValueError, match=message):
        derived_metrics([row])


# --- tables: derived columns ---------------------------------------------------------------


def _fake_run(folder: Path, rows: list[dict]) -> None:
    """A complete run folder whose metrics.json holds the derived metrics of ``rows``."""
    for name in FINAL_FILES:
        write_text(folder / name, "\n")
    write_jsonl(folder / "samples.jsonl", [{**row, "doc_id": i} for i, row in enumerate(rows)])
    write_json(folder / "metrics.json", {"tasks": {}, "derived": derived_metrics(rows)})
    meta = {"device": "cpu", "dtype": "float32", "limit": None}
    write_json(folder / "latency.json", {"meta": meta, "overall": {"total": 1.0, "pre_llm": 0.5, "llm": 0.5}})
    record = completion_record(identity_config(compose_config()), samples=len(rows), errors=0, resumed=0)
    write_json(folder / RUN_RECORD, record)


def test_tables_read_derived_columns(tmp_path):
    columns = dict(compose_config("benchmark=video").benchmark.columns)
    _fake_run(tmp_path / "none-all", LVB_ROWS + VIDEOMME_ROWS)
    changed = [_lvb("A", "S2E", "A", "B")] + LVB_ROWS[1:] + VIDEOMME_ROWS  # one perception answer differs
    _fake_run(tmp_path / "evoprune-64", changed)
    native, ours = collect(
        [("none", None, tmp_path / "none-all"), ("evoprune", 64, tmp_path / "evoprune-64")], columns, "table2"
    )
    assert native.values["LongVideoBench val"] == pytest.approx(300 / 7)
    assert native.values["LongVideoBench relation"] == pytest.approx(100 / 3)
    assert native.values["Video-MME long"] == pytest.approx(200 / 3)
    assert native.values["MVBench test"] == MISSING  # no MVBench rows in this run
    assert ours.values["LongVideoBench perception"] == pytest.approx(25.0)
    # agreement per derived column: the answers are the same text, except errors (always disagree)
    assert ours.agreement["LongVideoBench perception"] == 1.0 and ours.agreement["LongVideoBench relation"] == 2 / 3
    assert ours.agreement["Video-MME long"] == 2 / 3 and ours.agreement["MVBench test"] is None
    assert ours.agreement["all"] == pytest.approx(12 / 14)
