"""Train the tiny LLaVA that answers: `model=tiny_llava_trained`'s projector and LLM on generated shapes.

The vision tower is the config's seeded random CLIP (sin/cos positions), frozen and rebuilt from its seed
(never stored). Its features for every training image are computed once, then the projector and the
4-layer Llama (with its embeddings and LM head) learn to answer the shapes suite's questions
(`evoprune.harness.shapes_data`: a disjoint seed stream from the evaluation split) in the three smoke
formats, prompted exactly as lmms-eval prompts them at evaluation (the task files' post prompts, the
tasks' own ``doc_to_text``, the model's template) with the loss on the answer and EOS only.

    python scripts/train_tiny.py [--images 3000] [--steps 700] [--seed 0] [--out PATH]

Writes the checkpoint (safetensors, projector + LLM; metadata: tower seed, shapes, seed, command, code
version) atomically to the model config's ``checkpoint.path``. Deterministic for a seed on one machine
and thread count (2 threads by default).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evoprune.harness.models import load_model  # noqa: E402
from evoprune.harness.outputs import write_bytes  # noqa: E402
from evoprune.harness.pipeline import encode_frames  # noqa: E402
from evoprune.harness.shapes_data import TASKS, training_docs  # noqa: E402
from evoprune.harness.trained_checkpoint import checkpoint_metadata, trained_parameters  # noqa: E402

TASK_DIR = ROOT / "evoprune" / "harness" / "tasks" / "smoke"
DOC_TO_TEXT = {"shapes_vqa": "vqa_doc_to_text", "shapes_yesno": "yesno_doc_to_text", "shapes_mcq": "mcq_doc_to_text"}


def task_prompts() -> dict:
    """Each shapes task's ``doc_to_text`` bound to its file's default ``lmms_eval_specific_kwargs``."""
    spec = importlib.util.spec_from_file_location("smoke_task_utils", TASK_DIR / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    prompts = {}
    for task in TASKS:
        config = yaml.load((TASK_DIR / f"{task}.yaml").read_text(), Loader=Loader)
        kwargs = config["lmms_eval_specific_kwargs"]["default"]
        prompts[task] = functools.partial(getattr(utils, DOC_TO_TEXT[task]), lmms_eval_specific_kwargs=kwargs)
    return prompts


def compose_model_config(name: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=[f"model={name}"]).model


def examples(loaded, model_cfg, images: int, seed: int):
    """Cached tower features (N, 576, C) and, per question, (image index, prefix ids, suffix ids, answer ids)."""
    prompts = task_prompts()
    tokenizer = loaded.tokenizer
    features, items = [], []
    started = time.perf_counter()
    for index, (image, docs) in enumerate(training_docs(images, seed)):
        pixels = loaded.image_processor(image, return_tensors="pt").pixel_values
        with torch.inference_mode():
            features.append(encode_frames(loaded, pixels)[0][0].to(torch.float16))
        for task, task_docs in docs.items():
            for doc in task_docs:
                prompt = model_cfg.prompt_template.format(prompt=prompts[task](doc))
                ids = tokenizer(prompt).input_ids
                at = ids.index(loaded.image_token_id)
                answer = tokenizer(doc["answer"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
                items.append((index, ids[:at], ids[at + 1 :], answer))
        if (index + 1) % 500 == 0:
            print(f"features: {index + 1}/{images} images ({time.perf_counter() - started:.0f} s)", flush=True)
    return torch.stack(features), items


def batch_loss(model, features, items) -> torch.Tensor:
    """Mean cross-entropy of the answers (and EOS) of ``items``, teacher-forced, right-padded."""
    inner = model.model
    embed = inner.language_model.get_input_embeddings()
    rows, targets = [], []
    for index, prefix, suffix, answer in items:
        text = torch.tensor(prefix), torch.tensor(suffix + answer[:-1])
        visual = inner.multi_modal_projector(features[index].float())
        rows.append(torch.cat([embed(text[0]), visual, embed(text[1])]))
        target = torch.full((rows[-1].shape[0],), -100)
        target[-len(answer) :] = torch.tensor(answer)
        targets.append(target)
    length = max(row.shape[0] for row in rows)
    embeds = torch.stack([torch.cat([r, r.new_zeros(length - r.shape[0], r.shape[1])]) for r in rows])
    labels = torch.stack([torch.cat([t, t.new_full((length - t.shape[0],), -100)]) for t in targets])
    hidden = inner.language_model(inputs_embeds=embeds).last_hidden_state
    logits = model.lm_head(hidden)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_llava_trained", help="the model config to train")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="default: the model config's checkpoint.path")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model_cfg = compose_model_config(args.model)
    out = args.out or ROOT / model_cfg.checkpoint.path
    untrained = {**model_cfg, "checkpoint": None}
    loaded = load_model(untrained, torch.device("cpu"), torch.float32, seed=model_cfg.checkpoint.tower_seed)
    model = loaded.model
    features, items = examples(loaded, model_cfg, args.images, args.seed)
    print(f"{len(items)} questions on {len(features)} images; features in {time.perf_counter() - started:.0f} s")

    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trained = trained_parameters(model)
    for parameter in trained.values():
        parameter.requires_grad_(True)
    model.train()
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    optimizer = torch.optim.AdamW(list(trained.values()), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)),
    )
    losses = []
    for step in range(args.steps):
        chosen = torch.randint(len(items), (args.batch,), generator=generator).tolist()
        loss = batch_loss(model, features, [items[i] for i in chosen])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(trained.values()), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss))
        if (step + 1) % 50 == 0:
            recent = sum(losses[-50:]) / 50
            print(
                f"step {step + 1}/{args.steps}: loss {recent:.4f} ({time.perf_counter() - started:.0f} s)", flush=True
            )
    model.eval()
    command = "python scripts/train_tiny.py " + " ".join(argv if argv is not None else sys.argv[1:])
    metadata = checkpoint_metadata(
        model_cfg,
        seed=args.seed,
        command=command.strip(),
        images=args.images,
        steps=args.steps,
        final_loss=sum(losses[-50:]) / min(50, len(losses)),
    )
    from safetensors.torch import save

    state = {name: parameter.detach().contiguous() for name, parameter in trained.items()}
    write_bytes(out, save(state, metadata={key: json.dumps(value) for key, value in metadata.items()}))
    print(
        f"written: {out} ({out.stat().st_size / 1e6:.2f} MB, {len(state)} tensors) in "
        f"{(time.perf_counter() - started) / 60:.1f} min"
    )
    return out


if __name__ == "__main__":
    main()
