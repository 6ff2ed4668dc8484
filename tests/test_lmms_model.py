"""The lmms-eval model class: per-sample records and error recording."""

from lmms_eval.api.instance import Instance
from PIL import Image

from evoprune.harness.evaluation.lmms_model import ERROR_ANSWER, PrunedLlava
from evoprune.harness.inference.pruning import Pruner

GEN = {"until": ["ASSISTANT:"], "max_new_tokens": 3, "do_sample": False}


def _request(doc_id, doc_to_visual, gen_kwargs=GEN):
    return Instance(
        request_type="generate_until",
        arguments=("What is shown?", dict(gen_kwargs), doc_to_visual, doc_id, "toy", "test"),
        idx=0,
        metadata={"task": "toy", "doc_id": doc_id, "repeats": 1},
    )


def _model(tiny_loaded, docs):
    model = PrunedLlava(tiny_loaded, Pruner(None), warmup=0, progress=False)
    model.task_dict = {"toy": {"test": docs}}
    return model


def _open(doc):
    return Image.open(doc["path"])


def test_unreadable_image_is_recorded_and_the_rest_still_run(tiny_loaded, tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 48), (0, 128, 0)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    model = _model(tiny_loaded, [{"path": good}, {"path": bad}, {"path": good}])
    answers = model.generate_until([_request(i, _open) for i in range(3)])

    assert answers[1] == ERROR_ANSWER
    assert answers[0] != ERROR_ANSWER and answers[2] != ERROR_ANSWER
    records = model.records
    assert [r.error is None for r in records] == [True, False, True]
    assert records[1].error.startswith("UnidentifiedImageError") and "bad.png" in records[1].error
    assert records[0].visual_tokens_after == 576 and records[0].times["total"] > 0
    assert records[1].times == {}


def test_sampling_request_and_multi_image_samples_are_errors(tiny_loaded):
    image = Image.new("RGB", (32, 32))
    model = _model(tiny_loaded, [{}, {}])
    sampled = _request(0, lambda doc: [image], {**GEN, "do_sample": True})
    two_images = _request(1, lambda doc: [image, image])
    model.generate_until([sampled, two_images])
    assert "greedily only" in model.records[0].error
    assert "exactly one PIL image" in model.records[1].error
