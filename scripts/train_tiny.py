"""Train the tiny LLaVA that answers: `model=tiny_llava_trained`'s projector and LLM on generated shapes.

The vision tower is the config's seeded random CLIP (sin/cos positions), frozen and rebuilt from its seed
(never stored). Its features for every training image are computed once, then the projector and the
4-layer Llama (with its embeddings and LM head) learn to answer the shapes suite's questions
(`evoprune.harness.shapes_data`: a disjoint seed stream from the evaluation split) in the three smoke
formats, prompted exactly as lmms-eval prompts them at evaluation (the task files' post prompts, the
tasks' own ``doc_to_text``, the model's template) with the loss on the answer and EOS only. Beside the
questions, each image's description ("top left red circle, center blue square", `--describe`) teaches
the model to read shapes at named places; `--curriculum` starts from the shapes' patches alone and adds
the background back; `AttentionGuide` (from `--guide-layer`) adds training-only losses on where the last
prompt token looks and what it carries back, hop by hop. Every `--eval-every` steps the held-out split's
exact match is printed per task. Work in progress (issue 11): with the guide the right patches are found
on held-out images, but no setting tried yet answers the questions that need a place or a colour named
in the question (see the issue's notes).

    python scripts/train_tiny.py [--images 2000] [--steps 1200] [--seed 0] [--out PATH]

Writes the checkpoint (safetensors, projector + LLM; metadata: tower seed, shapes, seed, command, code
version) atomically to the model config's ``checkpoint.path``. Deterministic for a seed on one machine
and thread count (2 threads by default).
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib.util
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evoprune.harness.generated_data import COLORS, SHAPES  # noqa: E402
from evoprune.harness.models import load_model  # noqa: E402
from evoprune.harness.outputs import write_bytes  # noqa: E402
from evoprune.harness.pipeline import encode_frames  # noqa: E402
from evoprune.harness.shapes_data import (  # noqa: E402
    CELL_NAMES,
    GRID,
    TASKS,
    describe,
    eval_scenes,
    foreground_patches,
    training_docs,
)
from evoprune.harness.smoke_data import draw_scene  # noqa: E402
from evoprune.harness.trained_checkpoint import checkpoint_metadata, trained_parameters  # noqa: E402

TASK_DIR = ROOT / "evoprune" / "harness" / "tasks" / "smoke"
DESCRIBE_PROMPT = "Describe the image."
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


CELLS_LONGEST_FIRST = "|".join(sorted(CELL_NAMES, key=len, reverse=True))
REFERENCES = re.compile(rf"\b(?:(?P<color>{'|'.join(COLORS)})|(?<=at the )(?P<cell>{CELLS_LONGEST_FIRST}))\b")


def named_attributes(words: str) -> dict[str, int]:
    """What naming words say: {"color": index} for a colour word, {"cell": index} for a cell name."""
    return {"color": list(COLORS).index(words)} if words in COLORS else {"cell": CELL_NAMES.index(words)}


def referents(question: str, category: str, scene: dict) -> list[tuple[dict | None, tuple[int, int] | None]]:
    """What a question names, in order (a colour word or "at the <cell>"): the scene's shape it names (None for
    an absent colour) and the span of the words; a count question is about all shapes, named by no word."""
    if category == "count":
        return [(item, None) for item in scene["shapes"]]
    by_color = {item["color"]: item for item in scene["shapes"]}
    by_cell = {CELL_NAMES[item["cell"]]: item for item in scene["shapes"]}
    return [
        (by_color.get(m["color"]) if m["color"] else by_cell[m["cell"]], m.span())
        for m in REFERENCES.finditer(question)
    ]


ATTRIBUTES = {"color": len(COLORS), "shape": len(SHAPES), "cell": GRID * GRID, "letter": 4}


class AttentionGuide(torch.nn.Module):
    """Training-only losses on the hops an answer needs, read at the last prompt token (the answer loss alone
    does not find them; issue 11's notes). Three consecutive layers from ``layer``: first, head h looks at
    the words naming the h-th thing the question is about; then at that shape's patches (all shapes' for
    counting); last, head 0 at the right option's line of a multiple-choice prompt. Each loss is
    -log(attention mass on the target keys), plus a linear head on what the head carries (its output before
    ``o_proj``) that must tell the target's colour, shape, cell or letter. The heads are never saved."""

    def __init__(self, language_model, layer: int):
        super().__init__()
        self.attentions = [language_model.layers[layer + depth].self_attn for depth in range(3)]
        head_dim = self.attentions[0].head_dim
        self.heads = torch.nn.ModuleDict({name: torch.nn.Linear(head_dim, n) for name, n in ATTRIBUTES.items()})
        self.inputs, self.carried = [None] * 3, [None] * 3
        for depth, attention in enumerate(self.attentions):
            attention.register_forward_pre_hook(functools.partial(self._keep_inputs, depth), with_kwargs=True)
            attention.o_proj.register_forward_pre_hook(functools.partial(self._keep_carried, depth))

    def _keep_inputs(self, depth, module, args, kwargs):
        self.inputs[depth] = (kwargs["hidden_states"], kwargs["position_embeddings"])

    def _keep_carried(self, depth, module, args):
        self.carried[depth] = args[0]

    def loss(self, targets: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean attention loss and the mean attribute loss (0 without attributes) over ``targets``:
        (depth, row, query position, head, key positions, {attribute: class})."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        looked, told = [], []
        for depth, attention in enumerate(self.attentions):
            chosen = [target for target in targets if target[0] == depth]
            if not chosen:
                continue
            hidden, (cos, sin) = self.inputs[depth]
            shape = (*hidden.shape[:2], -1, attention.head_dim)
            query = attention.q_proj(hidden).view(shape).transpose(1, 2)
            key = attention.k_proj(hidden).view(shape).transpose(1, 2)
            query, key = apply_rotary_pos_emb(query, key, cos, sin)
            group = query.shape[1] // key.shape[1]
            carried = self.carried[depth].view(shape)
            for _, row, at, head, keys, attributes in chosen:
                logits = key[row, head // group, : at + 1] @ query[row, head, at] * attention.scaling
                looked.append(torch.logsumexp(logits, 0) - torch.logsumexp(logits[keys], 0))
                for name, target in attributes.items():
                    predicted = self.heads[name](carried[row, at, head])
                    told.append(torch.nn.functional.cross_entropy(predicted, torch.tensor(target)))
        looked = torch.stack(looked).mean()
        return looked, torch.stack(told).mean() if told else looked.new_zeros(())


class Examples:
    """Prompts as token ids around the image, for the training or the evaluation scenes.

    ``features``: the tower's features per scene (S, 576, C), fp16; ``foreground``: which patches overlap a
    shape (S, 576); ``items``: (scene index, ids before the image, ids after it, answer ids + EOS, label,
    guide targets), the label "task/category", or "describe" for the scene's description
    (`shapes_data.describe`, which gets no guide targets).
    """

    def __init__(self, loaded, model_cfg, scenes, describe_repeats: int, name: str):
        self.loaded, self.template, self.prompts = loaded, model_cfg.prompt_template, task_prompts()
        features, foreground, self.items = [], [], []
        self.patch = patch = loaded.model.config.vision_config.patch_size
        started = time.perf_counter()
        for index, (scene, image, docs) in enumerate(scenes):
            pixels = loaded.image_processor(image, return_tensors="pt").pixel_values
            with torch.inference_mode():
                features.append(encode_frames(loaded, pixels)[0][0].to(torch.float16))
            foreground.append(torch.from_numpy(foreground_patches(scene, patch)))
            for task, task_docs in docs.items():
                for doc in task_docs:
                    label = f"{task}/{doc['category']}"
                    self.items.append(self._item(index, self.prompts[task](doc), doc["answer"], label, scene, doc))
            self.items += [self._item(index, DESCRIBE_PROMPT, describe(scene), "describe", scene)] * describe_repeats
            if (index + 1) % 500 == 0:
                print(f"{name} features: {index + 1} images ({time.perf_counter() - started:.0f} s)", flush=True)
        self.features, self.foreground = torch.stack(features), torch.stack(foreground)

    def _item(self, index: int, prompt: str, answer: str, label: str, scene: dict, doc: dict | None = None):
        tokenizer = self.loaded.tokenizer
        text = self.template.format(prompt=prompt)
        encoded = tokenizer(text, return_offsets_mapping=True)
        ids = encoded.input_ids
        at = ids.index(self.loaded.image_token_id)
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        spans = encoded.offset_mapping[at + 1 :]
        guides = [] if doc is None else self._guides(text, spans, doc, scene, mcq=label.startswith("shapes_mcq"))
        return index, ids[:at], ids[at + 1 :], answer_ids, label, guides

    def _guides(self, text: str, spans: list, doc: dict, scene: dict, mcq: bool) -> list[tuple]:
        """`AttentionGuide` targets as (depth, head, "text" | "image", key positions after the image token or
        patch indices, {attribute: class}); heads 0 and 1 follow the first and second thing named."""

        def covering(start: int, end: int) -> np.ndarray:
            return np.array([position for position, (s, e) in enumerate(spans) if s < end and e > start])

        question = doc["question"][: doc["question"].index("?") + 1]
        at = text.index(question)
        named = referents(question, doc["category"], scene)
        spans_named = [span for _, span in named if span]
        words = [(covering(at + start, at + end), named_attributes(question[start:end])) for start, end in spans_named]
        shapes = [item for item, _ in named if item]
        looks = [
            (
                np.flatnonzero(foreground_patches({**scene, "shapes": [item]}, self.patch)),
                {
                    "color": list(COLORS).index(item["color"]),
                    "shape": SHAPES.index(item["shape"]),
                    "cell": item["cell"],
                },
            )
            for item in shapes
        ]
        if doc["category"] == "count":
            looks = [(np.concatenate([patches for patches, _ in looks]), {})]
        guides = [(0, head, "text", *words[min(head, len(words) - 1)]) for head in range(2) if words]
        guides += [(1, head, "image", *looks[min(head, len(looks) - 1)]) for head in range(2) if looks]
        line = re.search(rf"^{re.escape(doc['answer'])}\. .*$", text, re.MULTILINE) if mcq else None
        if line:
            guides.append((2, 0, "text", covering(*line.span()), {"letter": "ABCD".index(doc["answer"])}))
        return guides


def sequences(model, examples: Examples, items, background: float, generator=None):
    """Teacher-forced input embeddings (B, T, D) and answer targets (B, T) of ``items``, right-padded, and
    their `AttentionGuide` targets as (depth, row, query position, head, key positions, {attribute: class}).

    ``background`` < 1 keeps each scene's foreground patches and that share of the others, drawn at random.
    """
    inner = model.model
    embed = inner.language_model.get_input_embeddings()
    rows, targets, guides = [], [], []
    for row, (index, prefix, suffix, answer, _, item_guides) in enumerate(items):
        features = examples.features[index].float()
        kept = torch.arange(features.shape[0])
        if background < 1:
            drawn = torch.rand(features.shape[0], generator=generator) < background
            kept = torch.nonzero(examples.foreground[index] | drawn)[:, 0]
            features = features[kept]
        visual = inner.multi_modal_projector(features)
        start, query = len(prefix), len(prefix) + visual.shape[0] + len(suffix) - 1
        for depth, head, kind, keys, attributes in item_guides:
            keys = torch.from_numpy(keys)
            keys = (
                start + torch.searchsorted(kept, keys[torch.isin(keys, kept)])
                if kind == "image"
                else start + visual.shape[0] + keys
            )
            guides.append((depth, row, query, head, keys, attributes))
        rows.append(torch.cat([embed(torch.tensor(prefix)), visual, embed(torch.tensor(suffix + answer[:-1]))]))
        target = torch.full((rows[-1].shape[0],), -100)
        target[-len(answer) :] = torch.tensor(answer)
        targets.append(target)
    length = max(row.shape[0] for row in rows)
    embeds = torch.stack([torch.cat([r, r.new_zeros(length - r.shape[0], r.shape[1])]) for r in rows])
    labels = torch.stack([torch.cat([t, t.new_full((length - t.shape[0],), -100)]) for t in targets])
    return embeds, labels, guides


def logits_of(model, embeds):
    return model.lm_head(model.model.language_model(inputs_embeds=embeds).last_hidden_state)


def batch_loss(model, examples: Examples, items, background: float = 1.0, generator=None, guide=None):
    """Mean cross-entropy of the answers (and EOS) of ``items``, and the guide's attention and attribute
    losses (zeros without a guide)."""
    embeds, labels, guides = sequences(model, examples, items, background, generator)
    logits = logits_of(model, embeds)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    if guide is None or not guides:
        return loss, loss.new_zeros(()), loss.new_zeros(())
    return loss, *guide.loss(guides)


@torch.no_grad()
def held_out_accuracy(model, examples: Examples) -> dict[str, float]:
    """Share of the evaluation split's answers reproduced exactly (greedy, all 576 tokens), by task, by
    "task/category" and for the descriptions; teacher-forced, so one forward per question."""
    correct = collections.defaultdict(list)
    for item in examples.items:
        embeds, labels, _ = sequences(model, examples, [item], 1.0)
        predicted = logits_of(model, embeds)[0].argmax(-1)
        answer = labels[0] != -100
        hit = bool(torch.equal(predicted[answer], labels[0][answer]))
        for label in {item[4], item[4].split("/")[0]}:
            correct[label].append(hit)
    return {label: round(sum(hits) / len(hits), 3) for label, hits in sorted(correct.items())}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_llava_trained", help="the model config to train")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6, help="rounds of the three tasks' questions per image")
    parser.add_argument("--describe", type=int, default=4, help="description examples per image (0: none)")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--curriculum",
        type=int,
        default=800,
        help="steps over which the background patches return (0: all from the start)",
    )
    parser.add_argument(
        "--guide-layer", type=int, default=-1, help="first of the three layers the guide trains (-1: no guide)"
    )
    parser.add_argument("--look-weight", type=float, default=1.0, help="weight of the guide's attention loss")
    parser.add_argument("--tell-weight", type=float, default=8.0, help="weight of the guide's attribute loss")
    parser.add_argument(
        "--eval-every", type=int, default=250, help="held-out accuracy every N steps and at the end (0: never)"
    )
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
    train = Examples(loaded, model_cfg, training_docs(args.images, args.seed, args.rounds), args.describe, "training")
    held_out = args.eval_every and Examples(
        loaded, model_cfg, ((s, draw_scene(s), d) for s, d in eval_scenes()), 1, "held-out"
    )
    elapsed = time.perf_counter() - started
    print(f"{len(train.items)} examples on {len(train.features)} images; features in {elapsed:.0f} s")

    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trained = trained_parameters(model)
    for parameter in trained.values():
        parameter.requires_grad_(True)
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    language_model = model.model.language_model
    guide = AttentionGuide(language_model, args.guide_layer) if args.guide_layer >= 0 else None
    extra = list(guide.parameters()) if guide else []
    optimizer = torch.optim.AdamW(list(trained.values()) + extra, lr=args.lr, weight_decay=0.0)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)),
    )
    losses, guide_losses, accuracy = [], [], None
    model.train()
    for step in range(args.steps):
        chosen = torch.randint(len(train.items), (args.batch,), generator=generator).tolist()
        background = min(1.0, step / args.curriculum) if args.curriculum else 1.0
        loss, looked, told = batch_loss(model, train, [train.items[i] for i in chosen], background, generator, guide)
        optimizer.zero_grad()
        (loss + args.look_weight * looked + args.tell_weight * told).backward()
        torch.nn.utils.clip_grad_norm_(list(trained.values()), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss))
        guide_losses.append((float(looked), float(told)))
        if (step + 1) % 50 == 0:
            recent = sum(losses[-50:]) / 50
            look, tell = (sum(column) / 50 for column in zip(*guide_losses[-50:], strict=True))
            print(
                f"step {step + 1}/{args.steps}: loss {recent:.4f}, guide: look {look:.3f} tell {tell:.3f}, "
                f"background {background:.2f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        if args.eval_every and ((step + 1) % args.eval_every == 0 or step + 1 == args.steps):
            model.eval()
            accuracy = held_out_accuracy(model, held_out)
            model.train()
            print(f"step {step + 1}: held-out exact match {accuracy}", flush=True)
    model.eval()
    command = "python scripts/train_tiny.py " + " ".join(argv if argv is not None else sys.argv[1:])
    metadata = checkpoint_metadata(
        model_cfg,
        seed=args.seed,
        command=command.strip(),
        images=args.images,
        steps=args.steps,
        final_loss=sum(losses[-50:]) / min(50, len(losses)),
        held_out=accuracy,
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
