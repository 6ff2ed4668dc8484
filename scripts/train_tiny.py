"""Train the tiny models that answer: `model=tiny_llava_trained`'s projector and LLM on generated shapes, and
`model=tiny_llava_video_trained`'s (``--model tiny_llava_video_trained``) on generated clips.

The vision tower is the config's seeded random CLIP or SigLIP (sin/cos positions), frozen and rebuilt from
its seed (never stored). Its features for every training image or clip are computed once, then the
projector and the 4-layer LLM (with its embeddings and LM head; LLaVA-Video's newline too) learn to answer
the suite's questions in its formats, prompted exactly as lmms-eval prompts them at evaluation (the task
files' post prompts for the model's prompt variant, the tasks' own ``doc_to_text``, the model's template and
time instruction) with the loss on the answer and EOS only:

- image: the shapes suite (`evoprune.harness.data.shapes_data`: a seed stream disjoint from the evaluation split);
- video: clips like the smoke video suite's (`evoprune.harness.data.smoke_video.training_clips`: a disjoint seed
  stream), drawn, written to a temporary mp4 and read back as the harness reads the suite's clips; every
  clip asks every question kind in every format.

- The tokenizer is a byte-level BPE learned on the training prompts (image: each "at the <cell>" one token;
  video: Qwen's chat markers kept whole) (`train_tokenizer`); it is stored in the checkpoint.
- `--pack` questions on one scene share one copy of its image (a clip: its frames, laid out as the harness
  lays them out, and its time instruction) in a sequence, each seeing only the shared part and itself at
  its own positions (`sequences`), so the image is projected once for all of them.
- Image only: each image's description ("top left red circle, center blue square", `--describe`) is a
  further answer, and `--curriculum` starts from the shapes' patches alone and adds the background back.
- `AttentionGuide` (from `--guide-layer`) adds training-only losses hop by hop: image: each naming word
  looks up its shape's patches, the last prompt token reads those words (and the right option's word,
  which read its letter); video: each colour word looks up its shape in the first and the last frame, the
  last prompt token reads the question's kind (and, for a direction, the mover's colour word), then the
  right option's word (`ClipExamples._clip_guides`).

Every `--eval-every` steps the held-out split's exact match is printed per task and category.

    python scripts/train_tiny.py [--model tiny_llava_trained] [--images N] [--steps N] [--seed 0] [--out PATH]

Defaults by media in `RECIPES`. Writes the checkpoint (safetensors, the trained parameters; metadata: tower
seed, shapes, seed, command, code version, held-out scores) atomically to the model config's
``checkpoint.path``. For a seed, one machine and thread count (2 threads by default) a run gives the same
weights up to float rounding: a CPU matrix product now and then rounds differently (1e-7 after two steps,
in 2 of 6 short runs); the shipped image checkpoint's second run matched it bit for bit, the video one's
drifted after step 100 (same losses to four decimals until then) to weights up to 0.33 apart, equally right.
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
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evoprune.harness.common.outputs import write_bytes  # noqa: E402
from evoprune.harness.data.generated_data import COLORS, SHAPES  # noqa: E402
from evoprune.harness.data.shapes_data import (  # noqa: E402
    CELL_NAMES,
    COUNTS,
    GRID,
    TASKS,
    describe,
    eval_scenes,
    foreground_patches,
    training_docs,
)
from evoprune.harness.data.smoke_data import draw_scene  # noqa: E402
from evoprune.harness.data.smoke_video import (  # noqa: E402
    DIRECTIONS,
    KINDS,
    TASK_KINDS,
    doc_kind,
    ensure_smoke_video_data,
    eval_clip_docs,
    render_clip,
    shape_boxes,
    training_clips,
    write_mp4,
)
from evoprune.harness.inference.layout import pool_grid, visual_sequence  # noqa: E402
from evoprune.harness.inference.pipeline import encode_frames  # noqa: E402
from evoprune.harness.inference.video import frame_times, read_video, sample_frame_indices, time_instruction  # noqa: E402
from evoprune.harness.models.loading import (  # noqa: E402
    build_tiny_llava,
    build_tiny_llava_video,
    clip_image_processor,
    loaded_model,
    siglip_image_processor,
)
from evoprune.harness.models.tiny_tokenizers import (  # noqa: E402
    BYTE_SPECIALS,
    IMAGE_TOKEN,
    QWEN_CHAT_TOKENS,
    byte_level_tokenizer,
    qwen_chat_tokenizer,
)
from evoprune.harness.models.trained_checkpoint import checkpoint_metadata, trained_parameters  # noqa: E402

TASK_DIR = ROOT / "evoprune" / "harness" / "data" / "tasks" / "smoke"
VIDEO_TASK_DIR = ROOT / "evoprune" / "harness" / "data" / "tasks" / "smoke_video"
DESCRIBE_PROMPT = "Describe the image."
TOKENIZER_SCENES = 300  # training scenes whose prompts the tokenizer is learned on


def task_prompts(task_dir: Path = TASK_DIR, tasks=TASKS, variant: str | None = None) -> dict:
    """Each task's ``doc_to_text`` bound to its file's ``lmms_eval_specific_kwargs`` as lmms-eval binds them
    for a model whose prompt variant is ``variant`` (that variant's when the file has one, else the default)."""
    spec = importlib.util.spec_from_file_location(f"{task_dir.name}_task_utils", task_dir / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))

    def load(name: str) -> dict:
        config = yaml.load((task_dir / name).read_text(), Loader=Loader)
        included = config.pop("include", None)
        return {**load(included), **config} if included else config

    prompts = {}
    for task in tasks:
        config = load(f"{task}.yaml")
        kwargs = config["lmms_eval_specific_kwargs"]
        chosen = kwargs[variant] if variant in kwargs else kwargs["default"]
        function = getattr(utils, config["doc_to_text"].removeprefix("utils."))
        prompts[task] = functools.partial(function, lmms_eval_specific_kwargs=chosen)
    return prompts


def compose_model_config(name: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=[f"model={name}"]).model


CELLS_LONGEST_FIRST = "|".join(sorted(CELL_NAMES, key=len, reverse=True))
REFERENCES = re.compile(rf"\b(?:(?P<color>{'|'.join(COLORS)})|(?<=at the )(?P<cell>{CELLS_LONGEST_FIRST}))\b")


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


CELL_PHRASES = [f"at the {cell}" for cell in CELL_NAMES]


def train_tokenizer(texts, vocab_size: int, special_tokens: tuple[str, ...] = (), phrases: tuple[str, ...] = ()):
    """A byte-level BPE (`tokenizers.Tokenizer`) of ``vocab_size`` tokens learned on ``texts`` (the training
    prompts and answers), with ``special_tokens`` after ``BYTE_SPECIALS`` and each of ``phrases`` one token
    (the image model's "at the <cell>": prompts 2-3x shorter than in bytes, and a place named by one token
    that can look the place up itself; issue 11's notes: the byte tokenizer's models never learned to)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=BYTE_SPECIALS + list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    backend.add_tokens(list(phrases))
    return backend


def untrained_model(model_cfg, vocab: int, scenes):
    """``model_cfg``'s tiny LLaVA (or LLaVA-Video) before training (tower from ``checkpoint.tower_seed``), on
    the CPU in float32, with a `train_tokenizer` of ``vocab`` tokens learned on ``scenes`` (as
    `training_docs` or `smoke_video.training_clips` yields them; 0: the byte tokenizer)."""
    video = model_cfg.media == "video"
    tokenizer = None
    if vocab and video:
        texts = clip_texts(model_cfg, scenes)
        tokenizer = qwen_chat_tokenizer(train_tokenizer(texts, vocab, special_tokens=QWEN_CHAT_TOKENS))
    elif vocab:
        texts = training_texts(model_cfg.prompt_template, scenes)
        tokenizer = byte_level_tokenizer(train_tokenizer(texts, vocab, phrases=tuple(CELL_PHRASES)))
    if video:
        model, tokenizer = build_tiny_llava_video(model_cfg.tiny, model_cfg.checkpoint.tower_seed, tokenizer)
        image_processor = siglip_image_processor(model.config.vision_config.image_size)
    else:
        model, tokenizer = build_tiny_llava(model_cfg.tiny, model_cfg.checkpoint.tower_seed, tokenizer)
        image_processor = clip_image_processor(model.config.vision_config.image_size, model_cfg.pad_to_square)
    return loaded_model(model_cfg, model.eval(), tokenizer, image_processor, torch.device("cpu"), torch.float32)


def training_texts(template: str, scenes) -> list[str]:
    """The prompts (in ``template``) and answers of ``scenes`` (as `training_docs` yields them), and their
    descriptions: what the image model's tokenizer is learned on."""
    prompts, texts = task_prompts(), []
    for scene, _, docs in scenes:
        texts.append(describe(scene))
        for task, task_docs in docs.items():
            texts += [template.format(prompt=prompts[task](doc)) + " " + doc["answer"] for doc in task_docs]
            texts += [doc["answer"] for doc in task_docs]  # an answer follows "ASSISTANT:" with no space
    return texts


def clip_texts(model_cfg, clips) -> list[str]:
    """The prompts and answers of ``clips`` (as `smoke_video.training_clips` yields them), as the video model
    is prompted: what its tokenizer is learned on."""
    prompts, texts = task_prompts(VIDEO_TASK_DIR, TASK_KINDS, model_cfg.lmms_eval_prompts), []
    for clip, docs in clips:
        time_text = clip_time_text(model_cfg, clip)
        for task, task_docs in docs.items():
            for doc in task_docs:
                prompt = model_cfg.prompt_template.format(prompt=prompts[task](doc), time_instruction=time_text)
                texts += [prompt, answer_letter(task, doc)]
    return texts


def clip_time_text(model_cfg, clip: dict) -> str:
    """The time instruction the harness gives ``clip`` (its times as `video.read_video` reads them)."""
    timestamps, duration = frame_times(clip["frames"], clip["fps"], model_cfg.video.frames)
    return time_instruction(model_cfg.video.time_instruction, timestamps, duration)


def answer_letter(task: str, doc: dict) -> str:
    """The letter of ``doc``'s right option in the smoke video ``task``."""
    if task == "smoke_longvideobench":
        return "ABCDE"[doc["correct_choice"]]
    if task == "smoke_videomme":
        return doc["answer"]
    return "ABCDE"[doc["candidates"].index(doc["answer"])]


SHAPE_HEADS = (0, 1, 2, 3)  # read a named shape's box together (a shape is told by the box's mean, not a patch)
COUNT_HEADS = (0, 1, 3)  # the last token's heads reading every shape for a count (head 2 reads the question)
NOWHERE = np.array([], dtype=int)  # the keys of a guide that tells without looking
CATEGORIES = ("color_at", "shape_at", "count", "existence", "left_of", "above")
ATTRIBUTES = {
    "color": len(COLORS),
    "shape": len(SHAPES),
    "cell": GRID * GRID,
    "letter": 4,
    "yes": 2,
    "category": len(CATEGORIES),
    "cells": GRID * GRID,
    "count": len(COUNTS),
}


class AttentionGuide(torch.nn.Module):
    """Training-only losses on the hops an answer needs (the answer loss alone does not find them; issue 11's
    notes), on three consecutive layers from ``layer``; `Examples._guides` says which head of which token
    looks where. Each look adds -log(attention mass on the target keys among the keys the query sees), or,
    for heads that read a shape together, ``spread_weight`` x KL(uniform on the target keys || attention): a
    shape is read from its whole box (a linear probe on the tower's box mean tells it at .86, on the centre
    patch at .43), and mass alone let a head settle on a few patches; unweighted, the heads kept .6-.7 of
    their mass on the box and the read told shapes at .71 where an even read tells them at .94. A linear head
    on what the head carries (its output before ``o_proj``) must tell the target's attributes (colour, shape,
    cell, letter, ...). The heads are never saved."""

    def __init__(self, language_model, layer: int, spread_weight: float, attributes: dict[str, int] = ATTRIBUTES):
        super().__init__()
        self.spread_weight = spread_weight
        self.attentions = [language_model.layers[layer + depth].self_attn for depth in range(3)]
        head_dim = self.attentions[0].head_dim
        self.heads = torch.nn.ModuleDict({name: torch.nn.Linear(head_dim, n) for name, n in attributes.items()})
        width, carried = self.attentions[0].q_proj.in_features, self.attentions[0].o_proj.in_features
        self.joint = torch.nn.ModuleDict({name: torch.nn.Linear(carried, n) for name, n in attributes.items()})
        self.patch_shape = torch.nn.Linear(width, 1 + len(SHAPES))
        self.probes = torch.nn.ModuleDict({name: torch.nn.Linear(width, n) for name, n in attributes.items()})
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
        (depth, row, query position, head, key positions, {attribute: class}, visible key positions) (head:
        one head; a tuple of heads that each spread evenly over the keys and tell the attributes together,
        from their concatenated outputs; None: the query token's input to the layer tells them), and
        (-1, row, image token positions, each one's shape (0: none)), which a linear head must tell from the
        image tokens' input to the first guided layer. Computed for all targets of a layer at once (one
        small graph per target made the backward pass 5x the forward)."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        looked, told = [], []
        for _, row, positions, labels in (target for target in targets if target[0] == -1):
            predicted = self.patch_shape(self.inputs[0][0][row, positions])
            told.append(torch.nn.functional.cross_entropy(predicted, labels)[None])
        for depth, attention in enumerate(self.attentions):
            hidden, (cos, sin) = self.inputs[depth]
            probed = [target for target in targets if target[0] == depth and target[3] is None]
            if probed:  # the token's input to this layer must tell the attributes
                rows, ats = (torch.tensor(column) for column in list(zip(*probed, strict=True))[1:3])
                told += self._told(self.probes, hidden[rows, ats], [target[5] for target in probed])
            chosen = [target for target in targets if target[0] == depth and target[3] is not None]
            if not chosen:
                continue
            shape = (*hidden.shape[:2], -1, attention.head_dim)
            query = attention.q_proj(hidden).view(shape).transpose(1, 2)
            key = attention.k_proj(hidden).view(shape).transpose(1, 2)
            query, key = apply_rotary_pos_emb(query, key, cos, sin)
            group = query.shape[1] // key.shape[1]
            for heads, together in ((self.heads, False), (self.joint, True)):
                telling = [target for target in chosen if isinstance(target[3], tuple) == together]
                if telling:
                    rows, ats = (torch.tensor(column) for column in list(zip(*telling, strict=True))[1:3])
                    inputs = self.carried[depth][rows, ats]
                    if not together:
                        inputs = inputs.view(len(telling), -1, attention.head_dim)[
                            torch.arange(len(telling)), [target[3] for target in telling]
                        ]
                    told += self._told(heads, inputs, [target[5] for target in telling])
            looks = [  # (row, query, head, keys, visible, spread evenly)
                (row, at, head, keys, visible, isinstance(heads, tuple))
                for _, row, at, heads, keys, _, visible in chosen
                for head in (heads if isinstance(heads, tuple) else (heads,))
                if len(keys)
            ]
            if not looks:
                continue
            rows, ats, heads = (torch.tensor(column) for column in list(zip(*looks, strict=True))[:3])
            logits = torch.einsum("nd,ntd->nt", query[rows, heads, ats], key[rows, heads // group])
            logits = logits * attention.scaling
            visible, on = torch.zeros(2, *logits.shape, dtype=torch.bool)
            for index, (_, _, _, keys, seen, _) in enumerate(looks):
                visible[index, seen], on[index, keys] = True, True
            seen = torch.logsumexp(logits.masked_fill(~visible, -math.inf), 1)
            mass = torch.logsumexp(logits.masked_fill(~on, -math.inf), 1)
            count = on.sum(1)  # spread evenly: KL(uniform on the keys || attention)
            even = (logits * on).sum(1) / count + count.log()
            spread = torch.tensor([look[5] for look in looks])
            looked.append((seen - torch.where(spread, even, mass)) * torch.where(spread, self.spread_weight, 1.0))
        zero = self.patch_shape.weight.new_zeros(())
        return (torch.cat(looked).mean() if looked else zero), (torch.cat(told).mean() if told else zero)

    @staticmethod
    def _told(heads: torch.nn.ModuleDict, inputs: torch.Tensor, attributes: list[dict]) -> list[torch.Tensor]:
        """Per-target losses of ``heads`` telling each target's ``attributes`` from its row of ``inputs``; a
        list target is one yes/no per class (which cells are occupied)."""
        from torch.nn.functional import binary_cross_entropy_with_logits, cross_entropy

        losses = []
        for name in sorted({name for told in attributes for name in told}):
            index = [i for i, told in enumerate(attributes) if name in told]
            predicted = heads[name](inputs[index])
            truth = torch.tensor([attributes[i][name] for i in index])
            if truth.dim() == 2:
                losses.append(binary_cross_entropy_with_logits(predicted, truth.float(), reduction="none").mean(1))
            else:
                losses.append(cross_entropy(predicted, truth, reduction="none"))
        return losses


class Examples:
    """Prompts as token ids around the image, for the training or the evaluation scenes.

    ``features``: the tower's features per scene (S, 576, C), fp16; ``foreground``: which patches overlap a
    shape (S, 576); ``patch_shapes``: the shape whose box each patch overlaps (1 + index in SHAPES, 0 for
    none; S, 576); ``items``: (scene index, ids before the image, ids after it, answer ids + EOS, label,
    guide targets), the label "task/category", or "describe" for the scene's description
    (`shapes_data.describe`, which gets no guide targets).
    """

    def __init__(self, loaded, model_cfg, scenes, describe_repeats: int, name: str):
        self.loaded, self.template, self.prompts = loaded, model_cfg.prompt_template, task_prompts()
        features, foreground, self.patch_shapes, self.items, self.shared = [], [], [], [], {}
        self.patch = patch = loaded.model.config.vision_config.patch_size
        started = time.perf_counter()
        for index, (scene, image, docs) in enumerate(scenes):
            pixels = loaded.image_processor(image, return_tensors="pt").pixel_values
            with torch.inference_mode():
                features.append(encode_frames(loaded, pixels)[0][0].to(torch.float16))
            foreground.append(torch.from_numpy(foreground_patches(scene, patch)))
            shapes = torch.zeros(foreground[-1].shape, dtype=torch.long)
            for item in scene["shapes"]:
                shapes[torch.from_numpy(foreground_patches({**scene, "shapes": [item]}, patch))] = 1 + SHAPES.index(
                    item["shape"]
                )
            self.patch_shapes.append(shapes)
            for task, task_docs in docs.items():
                for doc in task_docs:
                    label = f"{task}/{doc['category']}"
                    self.items.append(self._item(index, self.prompts[task](doc), doc["answer"], label, scene, doc))
            self.items += [self._item(index, DESCRIBE_PROMPT, describe(scene), "describe", scene)] * describe_repeats
            if (index + 1) % 500 == 0:
                print(f"{name} features: {index + 1} images ({time.perf_counter() - started:.0f} s)", flush=True)
        self.features, self.foreground = torch.stack(features), torch.stack(foreground)
        self.patch_shapes = torch.stack(self.patch_shapes)

    def by_scene(self) -> list[list[tuple]]:
        """The items grouped by scene, in order."""
        grouped = collections.defaultdict(list)
        for item in self.items:
            grouped[item[0]].append(item)
        return [grouped[index] for index in sorted(grouped)]

    def visual(self, model, index: int, background: float = 1.0, generator=None):
        """Scene ``index``'s visual embeddings in the LLM (L, D), the patches they are (None: all, in order) and
        each one's shape label (None: no patch targets). ``background`` < 1 keeps the foreground patches and
        that share of the others, drawn at random."""
        features = self.features[index].float()
        kept = torch.arange(features.shape[0])
        if background < 1:
            drawn = torch.rand(features.shape[0], generator=generator) < background
            kept = torch.nonzero(self.foreground[index] | drawn)[:, 0]
            features = features[kept]
        return model.model.multi_modal_projector(features), kept, self.patch_shapes[index][kept]

    def visual_length(self, index: int) -> int:
        """Positions `visual` gives scene ``index`` with all its patches."""
        return self.features.shape[1]

    def _item(self, index: int, prompt: str, answer: str, label: str, scene: dict, doc: dict | None = None):
        text = self.template.format(prompt=prompt)
        at = text.index(IMAGE_TOKEN) + len(IMAGE_TOKEN)
        return self._tokenized(index, text, at, answer, label, functools.partial(self._guides, doc=doc, scene=scene))

    def _tokenized(self, index: int, text: str, prompt_at: int, answer: str, label: str, guides_of) -> tuple:
        """(scene index, ids before the image, ids from character ``prompt_at`` on, answer ids + EOS, label,
        ``guides_of(text, spans of those ids, label)``); the ids between the image and ``prompt_at`` are the
        scene's ``shared`` ones (the same in every item of the scene)."""
        tokenizer = self.loaded.tokenizer
        encoded = tokenizer(text, return_offsets_mapping=True)
        ids, offsets = encoded.input_ids, encoded.offset_mapping
        at = ids.index(self.loaded.image_token_id)
        start = next(i for i in range(at + 1, len(ids)) if offsets[i][0] >= prompt_at)
        if offsets[start][0] != prompt_at:
            raise ValueError(f"no token starts at character {prompt_at} of {text!r}")
        if self.shared.setdefault(index, ids[at + 1 : start]) != ids[at + 1 : start]:
            raise ValueError(f"scene {index}'s items differ between the image and the question: {text!r}")
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        guides = guides_of(text, offsets[start:], label) if label != "describe" else []
        return index, ids[:at], ids[start:], answer_ids, label, guides

    def _guides(self, text: str, spans: list, label: str, doc: dict, scene: dict) -> list[tuple]:
        """`AttentionGuide` targets as (depth, head, query position, "text" | "image", key positions or patch
        indices, {attribute: class}), positions counted after the image token:

        - depth 0, last prompt token, head 2: the question's words (telling its category); for a count, the
          `COUNT_HEADS` together there: every shape's patches evenly (telling which cells are occupied), and at
          depth 1 (head None: its input to that layer) the count;
        - depth 0, the last token of each naming word (a colour, or "at the <cell>"): head 0 the named shape's
          patches (telling its colour and cell), and all heads together (`SHAPE_HEADS`) evenly (its shape);
        - depth 1, last prompt token: head h that word of the h-th thing named (telling what was found there,
          and Yes or No);
        - multiple choice: depth 0, each option's word, head 3: its letter; depth 2, last prompt token, head 0:
          the right option's word (telling its letter), found by what the token read at depth 1. (Telling each
          option's word whether it is right, from the place's word, cost multiple-choice shapes .3-.5.)
        """

        def covering(start: int, end: int) -> np.ndarray:
            return np.array([position for position, (s, e) in enumerate(spans) if s < end and e > start])

        question = doc["question"][: doc["question"].index("?") + 1]
        at, final = text.index(question), len(spans) - 1
        asked = {"category": CATEGORIES.index(doc["category"])}
        guides = [(0, 2, final, "text", covering(at, at + len(question)), asked)]
        words = []
        if doc["category"] == "count":
            patches = np.flatnonzero(foreground_patches(scene, self.patch))
            occupied = {
                "cells": [int(any(item["cell"] == cell for item in scene["shapes"])) for cell in range(GRID**2)]
            }
            guides.append((0, COUNT_HEADS, final, "image", patches, occupied))
            guides.append((1, None, final, "text", NOWHERE, {"count": COUNTS.index(len(scene["shapes"]))}))
        else:
            for item, (start, end) in referents(question, doc["category"], scene):
                word, found = int(covering(at + start, at + end)[-1]), {}
                if item is not None:
                    found = {"color": list(COLORS).index(item["color"]), "shape": SHAPES.index(item["shape"])}
                    found["cell"] = item["cell"]
                    patches = np.flatnonzero(foreground_patches({**scene, "shapes": [item]}, self.patch))
                    guides.append((0, 0, word, "image", patches, {"color": found["color"], "cell": found["cell"]}))
                    guides.append((0, SHAPE_HEADS, word, "image", patches, {"shape": found["shape"]}))
                words.append((word, found))
            for head in range(2):
                word, found = words[min(head, len(words) - 1)]
                told = (
                    {**found, "yes": int(doc["answer"] == "Yes")}
                    if head == 0 and doc["answer"] in ("Yes", "No")
                    else found
                )
                guides.append((1, head, final, "text", np.array([word]), told))
        if not label.startswith("shapes_mcq"):
            return guides
        for option in re.finditer(r"^(?P<letter>[ABCD])\. (?P<text>.*)$", text, re.MULTILINE):
            right, letter = option["letter"] == doc["answer"], {"letter": "ABCD".index(option["letter"])}
            option_word = int(covering(*option.span("text"))[-1])
            guides.append((0, 3, option_word, "text", covering(*option.span("letter")), letter))
            if right:
                guides.append((2, 0, final, "text", np.array([option_word]), letter))
        return guides


VIDEO_ATTRIBUTES = {
    "color": len(COLORS),
    "colors": len(COLORS),
    "first": 2,
    "end": 2,
    "cell": GRID * GRID,
    "direction": len(DIRECTIONS),
    "kind": len(KINDS),
    "letter": 5,
}
COLOR_WORDS = re.compile(rf"\b(?:{'|'.join(COLORS)})\b")
OPTION_LINES = re.compile(r"^\(?(?P<letter>[A-E])[.)] (?P<text>.+)$", re.MULTILINE)


class ClipExamples(Examples):
    """Prompts as token ids around a clip, for the training clips (drawn, written to a temporary mp4 and
    read back as the harness reads the smoke clips) or the smoke video suite's clips (read from ``folder``).

    ``features``: the tower's features per clip (S, frames, 729, C), fp16; ``shared``: per clip, the ids
    between the video and the question (its time instruction); ``items`` as `Examples`', from the question on.
    """

    def __init__(self, loaded, model_cfg, clips, name: str, folder: Path | None = None):
        self.loaded, self.template = loaded, model_cfg.prompt_template
        self.prompts = task_prompts(VIDEO_TASK_DIR, TASK_KINDS, model_cfg.lmms_eval_prompts)
        self.frames, layout = model_cfg.video.frames, loaded.layout
        if layout.newline != "grid" or layout.pool_stride is None:
            raise ValueError(f"{model_cfg.name}: training expects pooled frames laid out with a newline per row")
        vision = loaded.model.config.vision_config
        self.cell, self.image_size = vision.patch_size * layout.pool_stride, vision.image_size
        self.pooled = vision.image_size // vision.patch_size // layout.pool_stride
        features, self.items, self.shared = [], [], {}
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            for index, (clip, docs) in enumerate(clips):
                path = Path(scratch) / "clip.mp4" if folder is None else folder / clip["video"]
                if folder is None:
                    write_mp4(path, render_clip(clip), clip["fps"])
                video = read_video(path, self.frames)
                pixels = loaded.image_processor(list(video.frames), return_tensors="pt").pixel_values
                with torch.inference_mode():
                    features.append(encode_frames(loaded, pixels)[0].to(torch.float16))
                time_text = time_instruction(model_cfg.video.time_instruction, video.timestamps, video.duration)
                for task, task_docs in docs.items():
                    for doc in task_docs:
                        self.items.append(self._clip_item(index, clip, task, doc, time_text))
                if (index + 1) % 100 == 0:
                    print(f"{name} features: {index + 1} clips ({time.perf_counter() - started:.0f} s)", flush=True)
        self.features = torch.stack(features)

    def visual(self, model, index: int, background: float = 1.0, generator=None):
        """Clip ``index``'s visual sequence as the harness lays it out (projected, pooled, a newline after each
        row), then its time instruction; every patch kept, no patch targets (``background`` is not used)."""
        inner = model.model
        projected = pool_grid(inner.multi_modal_projector(self.features[index].float()), self.loaded.layout.pool_stride)
        laid_out, _ = visual_sequence(projected, None, inner.image_newline, "grid")
        shared = inner.language_model.get_input_embeddings()(torch.tensor(self.shared[index], dtype=torch.long))
        return torch.cat([laid_out, shared]), None, None

    def visual_length(self, index: int) -> int:
        return self.frames * self.pooled * (self.pooled + 1) + len(self.shared[index])

    def _clip_item(self, index: int, clip: dict, task: str, doc: dict, time_text: str) -> tuple:
        prompt = self.prompts[task](doc)
        text = self.template.format(prompt=prompt, time_instruction=time_text)
        kind, answer = doc_kind(task, doc), answer_letter(task, doc)
        guides = functools.partial(self._clip_guides, doc=doc, clip=clip, kind=kind, answer=answer)
        return self._tokenized(index, text, text.index(prompt), answer, f"{task}/{kind}", guides)

    def _places(self, clip: dict, frame: int) -> dict[str, tuple[np.ndarray, int]]:
        """Per shape drawn in sampled frame ``frame`` (by role): the visual sequence positions of the pooled
        cells its box overlaps, and its 3x3 cell (row-major)."""
        frames = sample_frame_indices(clip["frames"], self.frames)
        width, height = clip["size"]
        places = {}
        for role, (left, top, right, bottom) in shape_boxes(clip, int(frames[frame])).items():
            cols, rows = (  # the processor resizes the frame to image_size x image_size
                np.arange(
                    max(0, int(low * self.image_size / extent // self.cell)),
                    min(self.pooled - 1, int(high * self.image_size / extent // self.cell)) + 1,
                )
                for low, high, extent in ((left, right, width), (top, bottom, height))
            )
            positions = (frame * self.pooled + rows[:, None]) * (self.pooled + 1) + cols[None, :]
            centre = (min(2, int(3 * (left + right) / 2 / width)), min(2, int(3 * (top + bottom) / 2 / height)))
            places[role] = (positions.reshape(-1), centre[1] * GRID + centre[0])
        return places

    def _clip_guides(self, text: str, spans: list, label: str, doc: dict, clip: dict, kind: str, answer: str):
        """`AttentionGuide` targets (as `Examples._guides`), positions counted from the question on:

        - depth 0, last prompt token: head 2 the question's words (telling its kind), head 0 the shape in the
          first frame (the mover: telling its colour), head 1 the shapes in the last frame (telling which
          colours are there); its input to depth 2 tells the answer's colour (or direction);
        - depth 0, each colour word of the question: head 0 that colour's shape's cells in the first frame,
          head 1 in the last frame (telling whether it is there, and its 3x3 cell), nowhere when it is not
          there; the mover's colour word tells its direction at depth 1 (its input), which the last prompt
          token reads there (head 0) for a direction question;
        - depth 0, each option's word (its colour, else its last word), head 3: its letter; depth 2, last
          prompt token, head 0: the right option's word (telling its letter), found by what it names (the
          answer's colour or direction), as the image recipe's multiple choice.
        """

        def covering(start: int, end: int) -> np.ndarray:
            return np.array([position for position, (s, e) in enumerate(spans) if s < end and e > start])

        offset, final = spans[0][0], len(spans) - 1
        at, end = text.index(doc["question"], offset), text.index(doc["question"], offset) + len(doc["question"])
        first, last = self._places(clip, 0), self._places(clip, self.frames - 1)
        colors, direction = list(COLORS), list(DIRECTIONS).index(clip["mover"]["direction"])
        mover, shown = first["mover"], {clip[role]["color"] for role in last}
        guides = [
            (0, 2, final, "text", covering(at, end), {"kind": KINDS.index(kind)}),
            (0, 0, final, "image", mover[0], {"color": colors.index(clip["mover"]["color"]), "cell": mover[1]}),
            (
                0,
                1,
                final,
                "image",
                np.concatenate([keys for keys, _ in last.values()]),
                {"colors": [int(c in shown) for c in colors]},
            ),
        ]
        wanted = (
            {"direction": direction}
            if kind == "direction"
            else {"color": colors.index(clip["newcomer" if kind == "appears" else "mover"]["color"])}
        )
        guides.append((2, None, final, "text", NOWHERE, wanted))
        roles = {clip[role]["color"]: role for role in ("mover", "newcomer")}
        named = []
        for match in COLOR_WORDS.finditer(text, at, end):
            word, role = int(covering(*match.span())[-1]), roles.get(match[0])
            for head, (flag, places) in enumerate(zip(("first", "end"), (first, last), strict=True)):
                keys, cell = places.get(role, (NOWHERE, None))
                guides.append(
                    (0, head, word, "image", keys, {flag: int(len(keys) > 0)} | ({"cell": cell} if len(keys) else {}))
                )
            if role == "mover":
                guides.append((1, None, word, "text", NOWHERE, {"direction": direction}))
            named.append(word)
        if kind == "direction":
            guides.append((1, 0, final, "text", np.array(named[:1]), {"direction": direction}))
        for option in OPTION_LINES.finditer(text, at):
            color = COLOR_WORDS.search(option["text"])
            start, stop = (
                (option.start("text") + color.start(), option.start("text") + color.end())
                if color
                else option.span("text")
            )
            word, letter = int(covering(start, stop)[-1]), {"letter": "ABCDE".index(option["letter"])}
            guides.append((0, 3, word, "text", covering(*option.span("letter")), letter))
            if option["letter"] == answer:
                guides.append((2, 0, final, "text", np.array([word]), letter))
        return guides


def sequences(model, examples: Examples, rows: list[list[tuple]], background: float, generator=None):
    """Teacher-forced input embeddings (B, T, D), answer targets (B, T), attention mask (B, 1, T, T) and
    position ids (B, T) for ``rows``, each a list of items of one scene packed behind one copy of its image:
    every item's prompt and answer see the shared prefix and image and themselves only, at the positions
    they would have alone, so each item's logits equal those of its own sequence (the tower's image is
    projected once for all of them). Right-padded. Also the `AttentionGuide` targets (see its ``loss``).

    ``background`` < 1 keeps each scene's foreground patches and that share of the others, drawn at random.
    """
    inner = model.model
    embed = inner.language_model.get_input_embeddings()
    packed, targets, segments, positions, guides = [], [], [], [], []
    for row, items in enumerate(rows):
        index, prefix = items[0][0], items[0][1]
        if any(item[0] != index or item[1] != prefix for item in items):
            raise ValueError("a packed row holds items of one scene with one prefix")
        visual, kept, patch_labels = examples.visual(model, index, background, generator)
        shared = len(prefix) + visual.shape[0]
        if patch_labels is not None:
            guides.append((-1, row, torch.arange(len(prefix), shared), patch_labels))
        parts, target, segment = [embed(torch.tensor(prefix)), visual], [torch.full((shared,), -100)], [0] * shared
        position = list(range(shared))
        for block, (_, _, suffix, answer, _, item_guides) in enumerate(items, start=1):
            start, length = len(segment), len(suffix) + len(answer) - 1
            for depth, head, query, kind, keys, attributes in item_guides:
                query += start
                visible = torch.cat([torch.arange(shared), torch.arange(start, query + 1)])
                keys = torch.from_numpy(keys)
                if kind == "image":
                    keys = len(prefix) + (
                        keys if kept is None else torch.searchsorted(kept, keys[torch.isin(keys, kept)])
                    )
                else:
                    keys = start + keys
                guides.append((depth, row, query, head, keys, attributes, visible))
            parts.append(embed(torch.tensor(suffix + answer[:-1])))
            block_target = torch.full((length,), -100)
            block_target[-len(answer) :] = torch.tensor(answer)
            target.append(block_target)
            segment += [block] * length
            position += range(shared, shared + length)
        packed.append(torch.cat(parts))
        targets.append(torch.cat(target))
        segments.append(torch.tensor(segment))
        positions.append(torch.tensor(position))
    length = max(row.shape[0] for row in packed)

    def padded(tensors, value):
        return torch.stack([torch.nn.functional.pad(t, (0, length - t.shape[0]), value=value) for t in tensors])

    embeds = torch.stack([torch.nn.functional.pad(r, (0, 0, 0, length - r.shape[0])) for r in packed])
    segment = padded(segments, -1)
    order = torch.arange(length)
    allowed = (order[None, :] <= order[:, None]) & (
        (segment[:, None, :] == 0) | (segment[:, None, :] == segment[:, :, None])
    )
    allowed |= torch.eye(length, dtype=torch.bool)  # padding rows see themselves (their outputs are unused)
    mask = torch.zeros(allowed.shape, dtype=embeds.dtype).masked_fill(~allowed, torch.finfo(embeds.dtype).min)
    return embeds, padded(targets, -100), mask[:, None], padded(positions, 0), guides


def logits_of(model, embeds, mask, positions):
    hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
    return model.lm_head(hidden.last_hidden_state)


def batch_loss(model, examples: Examples, rows, background: float = 1.0, generator=None, guide=None):
    """Mean cross-entropy of the answers (and EOS) of ``rows`` (see `sequences`), and the guide's attention
    and attribute losses (zeros without a guide)."""
    embeds, labels, mask, positions, guides = sequences(model, examples, rows, background, generator)
    logits = logits_of(model, embeds, mask, positions)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    if guide is None or not guides:
        return loss, loss.new_zeros(()), loss.new_zeros(())
    return loss, *guide.loss(guides)


@torch.no_grad()
def held_out_accuracy(model, examples: Examples) -> dict[str, float]:
    """Share of the evaluation split's answers reproduced exactly (greedy, all 576 tokens), by task, by
    "task/category" and for the descriptions; teacher-forced, one packed forward per scene."""
    correct = collections.defaultdict(list)
    for items in examples.by_scene():
        embeds, labels, mask, positions, _ = sequences(model, examples, [items], 1.0)
        predicted = logits_of(model, embeds, mask, positions)[0].argmax(-1)
        offset = len(items[0][1]) + examples.visual_length(items[0][0])
        for item in items:
            length = len(item[2]) + len(item[3]) - 1
            answer = slice(offset + length - len(item[3]), offset + length)
            hit = bool(torch.equal(predicted[answer], labels[0][answer]))
            offset += length
            for label in {item[4], item[4].split("/")[0]}:
                correct[label].append(hit)
    return {label: round(sum(hits) / len(hits), 3) for label, hits in sorted(correct.items())}


# Defaults by the model's media: the image recipe's and the video recipe's (a clip is 4 frames of 169 tokens
# and its newlines, and the tower takes 0.5 s on it: fewer clips and steps fit the 15 minutes).
RECIPES = {
    "image": {"images": 1000, "steps": 1400, "pack": 8, "curriculum": 300, "eval_every": 700},
    "video": {"images": 350, "steps": 650, "pack": 6, "curriculum": 0, "eval_every": 650},
}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_llava_trained", help="the model config to train")
    parser.add_argument("--images", type=int, help="training images, or clips (default: the model's recipe's)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of the three tasks' questions per image")
    parser.add_argument(
        "--yesno-rounds",
        type=int,
        default=3,
        help="rounds whose yes/no pair is trained (learned first: fewer leave the other tasks more of each step)",
    )
    parser.add_argument("--describe", type=int, default=4, help="description examples per image (0: none)")
    parser.add_argument("--steps", type=int)
    parser.add_argument(
        "--vocab", type=int, default=600, help="BPE tokens learned on the training prompts (0: the byte tokenizer)"
    )
    parser.add_argument("--batch", type=int, default=8, help="scenes per step")
    parser.add_argument("--pack", type=int, help="questions per scene and step, behind one image")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--curriculum",
        type=int,
        help="steps over which the background patches return (0: all from the start)",
    )
    parser.add_argument(
        "--guide-layer", type=int, default=1, help="first of the three layers the guide trains (-1: no guide)"
    )
    parser.add_argument("--look-weight", type=float, default=1.0, help="weight of the guide's attention loss")
    parser.add_argument(
        "--spread-weight",
        type=float,
        default=4.0,
        help="weight of a spread-evenly look (a shape's box) against a look by mass, within the attention loss",
    )
    parser.add_argument("--tell-weight", type=float, default=8.0, help="weight of the guide's attribute loss")
    parser.add_argument("--eval-every", type=int, help="held-out accuracy every N steps and at the end (0: never)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="default: the model config's checkpoint.path")
    args = parser.parse_args(argv)
    if args.yesno_rounds < 0:
        parser.error(f"--yesno-rounds={args.yesno_rounds} must be 0 or more (more than --rounds: all of them)")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model_cfg = compose_model_config(args.model)
    for name, value in RECIPES[model_cfg.media].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    out = args.out or ROOT / model_cfg.checkpoint.path
    if model_cfg.media == "video":
        loaded = untrained_model(model_cfg, args.vocab, training_clips(min(args.images, TOKENIZER_SCENES), args.seed))
        train = ClipExamples(loaded, model_cfg, training_clips(args.images, args.seed), "training")
        held_out = args.eval_every and ClipExamples(
            loaded, model_cfg, eval_clip_docs(ensure_smoke_video_data()), "held-out", ensure_smoke_video_data()
        )
        attributes = VIDEO_ATTRIBUTES
    else:
        loaded = untrained_model(model_cfg, args.vocab, training_docs(min(args.images, TOKENIZER_SCENES), args.seed))
        fewer_yesno = (
            (scene, image, {**docs, "shapes_yesno": docs["shapes_yesno"][: 2 * args.yesno_rounds]})
            for scene, image, docs in training_docs(args.images, args.seed, args.rounds)
        )
        train = Examples(loaded, model_cfg, fewer_yesno, args.describe, "training")
        held_out = args.eval_every and Examples(
            loaded, model_cfg, ((s, draw_scene(s), d) for s, d in eval_scenes()), 1, "held-out"
        )
        attributes = ATTRIBUTES
    model = loaded.model
    elapsed = time.perf_counter() - started
    print(f"{len(train.items)} examples on {len(train.features)} images or clips; features in {elapsed:.0f} s")

    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trained = trained_parameters(model)
    for parameter in trained.values():
        parameter.requires_grad_(True)
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    language_model = model.model.language_model
    guide = None
    if args.guide_layer >= 0:
        guide = AttentionGuide(language_model, args.guide_layer, args.spread_weight, attributes)
    extra = list(guide.parameters()) if guide else []
    optimizer = torch.optim.AdamW(list(trained.values()) + extra, lr=args.lr, weight_decay=0.0)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)),
    )
    losses, guide_losses, accuracy = [], [], None
    scenes = train.by_scene()
    model.train()
    for step in range(args.steps):
        rows = []
        for scene in torch.randint(len(scenes), (args.batch,), generator=generator).tolist():
            chosen = torch.randperm(len(scenes[scene]), generator=generator)[: args.pack].tolist()
            rows.append([scenes[scene][i] for i in chosen])
        background = min(1.0, step / args.curriculum) if args.curriculum else 1.0
        loss, looked, told = batch_loss(model, train, rows, background, generator, guide)
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
        **({"tokenizer": loaded.tokenizer.backend_tokenizer.to_str()} if args.vocab else {}),
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
