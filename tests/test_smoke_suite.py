"""The offline smoke suite: data generation, scoring, and loading through lmms-eval."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
from conftest import file_tree, local_task_manager, read_docs, scripted_lmms
from PIL import Image

from evoprune.harness.data import smoke_data
from evoprune.harness.data.smoke_data import ensure_smoke_data, sample_counts
from evoprune.harness.results.mcq import parse_option_letter

TASK_DIR = Path(smoke_data.__file__).resolve().parent / "tasks" / "smoke"
TASKS = ("smoke_vqa", "smoke_yesno", "smoke_mcq")


@pytest.fixture(scope="module")
def data_dir() -> Path:
    return ensure_smoke_data()


@pytest.fixture(scope="module")
def utils():
    from evoprune.harness.data.tasks.smoke import utils

    return utils


# --- data -----------------------------------------------------------------------------


def test_generation_is_deterministic(tmp_path):
    first = file_tree(ensure_smoke_data(target_dir=tmp_path / "a" / "data"))
    second = file_tree(ensure_smoke_data(target_dir=tmp_path / "b" / "data"))
    assert len(first) == 36 + 4
    assert first == second


def test_stale_data_is_regenerated_and_fresh_data_kept(tmp_path):
    target = ensure_smoke_data(target_dir=tmp_path / "data")
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "marker").write_text("kept while fresh")
    ensure_smoke_data(target_dir=target)
    assert (target / "marker").exists()

    (target / "manifest.json").write_text(json.dumps({**manifest, "seed": -1}))
    ensure_smoke_data(target_dir=target)
    assert not (target / "marker").exists()
    assert json.loads((target / "manifest.json").read_text()) == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_sample_counts_and_doc_fields(data_dir):
    assert sample_counts(data_dir) == {task: 36 for task in TASKS}
    fields = {
        "smoke_vqa": {"question_id", "image", "question", "answer", "answers", "category"},
        "smoke_yesno": {"question_id", "image", "question", "answer", "category"},
        "smoke_mcq": {"question_id", "image", "question", "hint", "A", "B", "C", "D", "answer", "category"},
    }
    ids = []
    for task in TASKS:
        docs = read_docs(data_dir, task)
        assert len(docs) == 36
        assert all(set(doc) == fields[task] for doc in docs)
        assert all((data_dir / doc["image"]).is_file() for doc in docs)
        ids += [doc["question_id"] for doc in docs]
    assert len(ids) == len(set(ids))
    sizes = {Image.open(p).size for p in (data_dir / "images").glob("*.png")}
    assert {(336, 336), (320, 240), (400, 300)} <= sizes


def test_doc_formats(data_dir):
    for doc in read_docs(data_dir, "smoke_vqa"):
        assert [a["answer_id"] for a in doc["answers"]] == list(range(1, 11))
    yesno = read_docs(data_dir, "smoke_yesno")
    for yes, no in zip(yesno[::2], yesno[1::2], strict=True):
        assert (yes["answer"], no["answer"]) == ("Yes", "No")
        assert yes["image"] == no["image"] and yes["category"] == no["category"]
        assert yes["question"].endswith(" Please answer yes or no.")
    for doc in read_docs(data_dir, "smoke_mcq"):
        assert doc[doc["answer"]] is not None


# --- scoring --------------------------------------------------------------------------


def test_vqa_accuracy(utils):
    three = ["red"] * 3 + ["blue"] * 7
    one = ["red"] + ["blue"] * 9
    assert utils.vqa_accuracy("red", three) == pytest.approx(0.9)
    assert utils.vqa_accuracy("red", one) == pytest.approx(0.3)
    assert utils.vqa_accuracy("blue", one) == pytest.approx(1.0)
    assert utils.vqa_accuracy("green", one) == 0.0
    assert utils.vqa_accuracy("Two.", ["2"] * 2 + ["two"] + ["3"] * 7) == pytest.approx(0.9)
    assert utils.vqa_accuracy("a circle", ["circle"] * 10) == 1.0


def test_vqa_matches_lmms_eval_vqav2(utils, data_dir):
    from lmms_eval.tasks.vqav2.utils import vqav2_process_results

    for doc in read_docs(data_dir, "smoke_vqa")[:12]:
        for prediction in (doc["answer"], doc["answers"][0]["answer"], "Two", "no idea"):
            expected = vqav2_process_results(copy.deepcopy(doc), [prediction])["exact_match"]
            assert utils.vqa_process_results(doc, [prediction]) == {"exact_match": pytest.approx(expected)}


def _yesno_doc(image: str, answer: str, category: str) -> dict:
    return {"question_id": f"{image}-{answer}", "image": image, "answer": answer, "category": category}


def test_mme_acc_plus(utils):
    cases = [
        (_yesno_doc("i1", "Yes", "color"), "Yes"),
        (_yesno_doc("i1", "No", "color"), "No, it is not."),
        (_yesno_doc("i2", "Yes", "color"), "yes"),
        (_yesno_doc("i2", "No", "color"), "Yes"),
        (_yesno_doc("i3", "Yes", "count"), "maybe"),
        (_yesno_doc("i3", "No", "count"), "Yes"),
    ]
    records = [utils.yesno_process_results(doc, [reply])["mme_perception_score"] for doc, reply in cases]
    # color: acc 75 + acc+ 50; count: 0 + 0
    assert utils.yesno_aggregate(records) == pytest.approx(125.0)

    from lmms_eval.tasks.mme.utils import mme_aggregate_results

    as_mme = [{**r, "question_id": r["image"], "category": r["category"]} for r in records]
    assert utils.yesno_aggregate(records) == pytest.approx(mme_aggregate_results(as_mme))
    # a split pair (e.g. an odd limit) leaves that image out instead of failing the run
    assert utils.yesno_aggregate(records[:-1]) == pytest.approx(125.0)
    assert math.isnan(utils.yesno_aggregate(records[:1]))


OPTIONS = {"A": "green", "B": "blue", "C": "red", "D": "yellow"}


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("B", "B"),
        ("(C) red", "C"),
        ("The answer is A.", "A"),
        ("red", "C"),
        ("It is yellow.", "D"),
        ("A red circle is shown", "C"),
        ("A or B", None),
        ("green or blue", None),
        ("xyzzy", None),
        ("", None),
        ("E", "E"),
    ],
)
def test_parse_option_letter(reply, letter):
    assert parse_option_letter(reply, OPTIONS) == letter


def test_parse_matches_mmbench_can_infer():
    from lmms_eval.tasks.mmbench.mmbench_evals import MMBench_Evaluator

    evaluator = MMBench_Evaluator()
    replies = [
        "B",
        "B.",
        "(C)",
        "C).",
        ":D",
        "A",
        "A B",
        "The answer is A",
        "The answer is (A).",
        "I think B, not C.",
        "blue",
        "Blue!",
        "bluegreen",
        "A: green",
        "a",
        "Answer: D",
        "E. none",
        "none",
    ]
    for reply in replies:
        expected = evaluator.can_infer(reply, dict(OPTIONS)) or None
        assert parse_option_letter(reply, OPTIONS) == expected, reply


def test_mcq_scoring_counts_unparsed_as_wrong(utils):
    doc = {"question": "What color is the circle?", "hint": None, **OPTIONS, "answer": "C"}
    per_doc = [utils.mcq_process_results(doc, [reply]) for reply in ("C", "(C) red", "A", "no idea", "A or B")]
    assert [r["needs_judge"] for r in per_doc] == [0, 0, 0, 1, 1]
    assert utils.mcq_accuracy([r["accuracy"] for r in per_doc]) == pytest.approx(40.0)
    assert utils.mcq_needs_judge([r["needs_judge"] for r in per_doc]) == 2


def test_mcq_prompt_like_mmbench(utils):
    doc = {
        "question": "Which shape is red?",
        "hint": "Look closely.",
        "A": "circle",
        "B": "square",
        "C": "triangle",
        "D": None,
    }
    kwargs = {"pre_prompt": "", "post_prompt": "\nAnswer with the option's letter from the given choices directly."}
    assert utils.mcq_doc_to_text(doc, kwargs) == (
        "Look closely. Which shape is red? There are several options:\nA. circle\nB. square\nC. triangle\n\n"
        "Answer with the option's letter from the given choices directly."
    )


# --- lmms-eval loading ------------------------------------------------------------------


def _build(task_manager, name: str):
    from lmms_eval.tasks import get_task_dict

    return get_task_dict([name], task_manager)


def test_task_manager_builds_group(data_dir):
    manager = local_task_manager(TASK_DIR)
    shapes = {"shapes_vqa", "shapes_yesno", "shapes_mcq"}  # the shapes suite's tasks share the folder
    assert set(manager.all_subtasks) == set(TASKS) | shapes and manager.all_groups == ["smoke_image"]
    (group_tasks,) = _build(manager, "smoke_image").values()
    assert set(group_tasks) == set(TASKS)
    for name, task in group_tasks.items():
        docs = task.test_docs()
        assert len(docs) == 36, name
        (image,) = task.doc_to_visual(docs[0])
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        assert task.config.generation_kwargs["until"] == ["ASSISTANT:"]


def test_corrupt_image_raises_in_copied_task_folder(tmp_path, data_dir):
    copied = tmp_path / "smoke"
    shutil.copytree(TASK_DIR, copied, ignore=shutil.ignore_patterns("__pycache__"))
    task = _build(local_task_manager(copied), "smoke_vqa")["smoke_vqa"]
    doc = task.test_docs()[0]
    (copied / "data" / doc["image"]).write_bytes(b"not a png")
    with pytest.raises(OSError):
        task.doc_to_visual(doc)
    assert (data_dir / doc["image"]).read_bytes().startswith(b"\x89PNG")


def test_simple_evaluate_reports_metrics(data_dir):
    from lmms_eval.evaluator import simple_evaluate

    def half_right(model, request):
        """The target for even-numbered docs, junk for odd ones (after loading the image)."""
        _, _, doc_to_visual, doc_id, task, split = request.args
        doc = model.task_dict[task][split][doc_id]
        doc_to_visual(doc)
        return doc["answer"] if doc_id % 2 == 0 else "zzz"

    results = simple_evaluate(
        model=scripted_lmms(half_right),
        tasks=["smoke_image"],
        task_manager=local_task_manager(TASK_DIR),
        bootstrap_iters=0,
    )
    scores = results["results"]
    assert scores["smoke_vqa"]["exact_match,none"] == pytest.approx(0.5)
    # every "No" question is odd-numbered: per category acc 50 + acc+ 0, four categories
    assert scores["smoke_yesno"]["mme_perception_score,none"] == pytest.approx(200.0)
    assert scores["smoke_mcq"]["accuracy,none"] == pytest.approx(50.0)
    assert scores["smoke_mcq"]["needs_judge,none"] == 18
