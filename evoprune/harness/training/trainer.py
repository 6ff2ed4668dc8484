"""Training a tiny model: the recipes, the model before training, the packed teacher-forced sequences and
their loss, the held-out exact match, and `train`, a whole run to its checkpoint."""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from evoprune.harness.common.outputs import write_bytes
from evoprune.harness.common.paths import CONFIG_DIR, REPO_ROOT
from evoprune.harness.data.shapes_data import eval_scenes, training_docs
from evoprune.harness.data.smoke_data import draw_scene
from evoprune.harness.data.smoke_video import ensure_smoke_video_data, eval_clip_docs, training_clips
from evoprune.harness.models.loading import (
    build_tiny_llava,
    build_tiny_llava_video,
    clip_image_processor,
    loaded_model,
    siglip_image_processor,
)
from evoprune.harness.models.tiny_tokenizers import QWEN_CHAT_TOKENS, byte_level_tokenizer, qwen_chat_tokenizer
from evoprune.harness.models.trained_checkpoint import checkpoint_metadata, trained_parameters
from evoprune.harness.training.examples import ClipExamples, Examples
from evoprune.harness.training.guide import ATTRIBUTES, VIDEO_ATTRIBUTES, AttentionGuide
from evoprune.harness.training.prompts import CELL_PHRASES, clip_texts, train_tokenizer, training_texts

TOKENIZER_SCENES = 300  # training scenes whose prompts the tokenizer is learned on

# Defaults by the model's media: the image recipe's and the video recipe's (a clip is 4 frames of 169 tokens
# and its newlines, and the tower takes 0.5 s on it: fewer clips and steps fit the 15 minutes).
RECIPES = {
    "image": {"images": 1000, "steps": 1400, "pack": 8, "curriculum": 300, "eval_every": 700},
    "video": {"images": 350, "steps": 650, "pack": 6, "curriculum": 0, "eval_every": 650},
}


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """What `train` runs with: ``scripts/train_tiny.py``'s options (``--guide-layer`` is ``guide_layer``; its
    ``--help`` says what each means), with their defaults; None: the model's media's recipe's (`RECIPES`)."""

    model: str = "tiny_llava_trained"
    images: int | None = None
    rounds: int = 6
    yesno_rounds: int = 3
    describe: int = 4
    steps: int | None = None
    vocab: int = 600
    batch: int = 8
    pack: int | None = None
    lr: float = 3e-3
    curriculum: int | None = None
    guide_layer: int = 1
    look_weight: float = 1.0
    spread_weight: float = 4.0
    tell_weight: float = 8.0
    eval_every: int | None = None
    seed: int = 0
    threads: int = 2
    out: Path | None = None


def compose_model_config(name: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[f"model={name}"]).model


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


def train(options: TrainingOptions, command: str) -> Path:
    """Train ``options.model``: `model=tiny_llava_trained`'s projector and LLM on generated shapes, or
    `model=tiny_llava_video_trained`'s on generated clips; ``command`` is recorded in the checkpoint.

    The vision tower is the config's seeded random CLIP or SigLIP (sin/cos positions), frozen and rebuilt from
    its seed (never stored). Its features for every training image or clip are computed once, then the
    projector and the 4-layer LLM (with its embeddings and LM head; LLaVA-Video's newline too) learn to answer
    the suite's questions in its formats, prompted exactly as lmms-eval prompts them at evaluation (the task
    files' post prompts for the model's prompt variant, the tasks' own ``doc_to_text``, the model's template and
    time instruction) with the loss on the answer and EOS only:

    - image: the shapes suite (`evoprune.harness.data.shapes_data`: a seed stream disjoint from the evaluation
      split);
    - video: clips like the smoke video suite's (`evoprune.harness.data.smoke_video.training_clips`: a disjoint
      seed stream), drawn, written to a temporary mp4 and read back as the harness reads the suite's clips;
      every clip asks every question kind in every format.

    - The tokenizer is a byte-level BPE learned on the training prompts (image: each "at the <cell>" one token;
      video: Qwen's chat markers kept whole) (`prompts.train_tokenizer`); it is stored in the checkpoint.
    - ``pack`` questions on one scene share one copy of its image (a clip: its frames, laid out as the harness
      lays them out, and its time instruction) in a sequence, each seeing only the shared part and itself at
      its own positions (`sequences`), so the image is projected once for all of them.
    - Image only: each image's description ("top left red circle, center blue square", ``describe``) is a
      further answer, and ``curriculum`` starts from the shapes' patches alone and adds the background back.
    - `guide.AttentionGuide` (from ``guide_layer``) adds training-only losses hop by hop: image: each naming
      word looks up its shape's patches, the last prompt token reads those words (and the right option's word,
      which read its letter); video: each colour word looks up its shape in the first and the last frame, the
      last prompt token reads the question's kind (and, for a direction, the mover's colour word), then the
      right option's word (`examples.ClipExamples._clip_guides`).

    Every ``eval_every`` steps the held-out split's exact match is printed per task and category.

    Writes the checkpoint (safetensors, the trained parameters; metadata: tower seed, shapes, seed, command,
    code version, held-out scores) atomically to ``out``, by default the model config's ``checkpoint.path``,
    and returns its path. For a seed, one machine and thread count (2 threads by default) a run gives the same
    weights up to float rounding: a CPU matrix product now and then rounds differently (1e-7 after two steps,
    in 2 of 6 short runs); the shipped image checkpoint's second run matched it bit for bit, the video one's
    drifted after step 100 (same losses to four decimals until then) to weights up to 0.33 apart, equally
    right.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        return _train(options, command)
    finally:
        torch.set_num_threads(threads)  # the caller's own count again (a test worker's share of the cores)


def _train(options: TrainingOptions, command: str) -> Path:
    started = time.perf_counter()
    model_cfg = compose_model_config(options.model)
    recipe = RECIPES[model_cfg.media]
    options = dataclasses.replace(
        options, **{name: value for name, value in recipe.items() if getattr(options, name) is None}
    )
    out = options.out or REPO_ROOT / model_cfg.checkpoint.path
    if model_cfg.media == "video":
        loaded = untrained_model(
            model_cfg, options.vocab, training_clips(min(options.images, TOKENIZER_SCENES), options.seed)
        )
        training = ClipExamples(loaded, model_cfg, training_clips(options.images, options.seed), "training")
        held_out = options.eval_every and ClipExamples(
            loaded, model_cfg, eval_clip_docs(ensure_smoke_video_data()), "held-out", ensure_smoke_video_data()
        )
        attributes = VIDEO_ATTRIBUTES
    else:
        loaded = untrained_model(
            model_cfg, options.vocab, training_docs(min(options.images, TOKENIZER_SCENES), options.seed)
        )
        fewer_yesno = (
            (scene, image, {**docs, "shapes_yesno": docs["shapes_yesno"][: 2 * options.yesno_rounds]})
            for scene, image, docs in training_docs(options.images, options.seed, options.rounds)
        )
        training = Examples(loaded, model_cfg, fewer_yesno, options.describe, "training")
        held_out = options.eval_every and Examples(
            loaded, model_cfg, ((s, draw_scene(s), d) for s, d in eval_scenes()), 1, "held-out"
        )
        attributes = ATTRIBUTES
    model = loaded.model
    elapsed = time.perf_counter() - started
    print(f"{len(training.items)} examples on {len(training.features)} images or clips; features in {elapsed:.0f} s")

    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trained = trained_parameters(model)
    for parameter in trained.values():
        parameter.requires_grad_(True)
    generator = torch.Generator().manual_seed(options.seed)
    torch.manual_seed(options.seed)
    language_model = model.model.language_model
    guide = None
    if options.guide_layer >= 0:
        guide = AttentionGuide(language_model, options.guide_layer, options.spread_weight, attributes)
    extra = list(guide.parameters()) if guide else []
    optimizer = torch.optim.AdamW(list(trained.values()) + extra, lr=options.lr, weight_decay=0.0)
    warmup = max(1, options.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, options.steps) / options.steps)),
    )
    losses, guide_losses, accuracy = [], [], None
    scenes = training.by_scene()
    model.train()
    for step in range(options.steps):
        rows = []
        for scene in torch.randint(len(scenes), (options.batch,), generator=generator).tolist():
            chosen = torch.randperm(len(scenes[scene]), generator=generator)[: options.pack].tolist()
            rows.append([scenes[scene][i] for i in chosen])
        background = min(1.0, step / options.curriculum) if options.curriculum else 1.0
        loss, looked, told = batch_loss(model, training, rows, background, generator, guide)
        optimizer.zero_grad()
        (loss + options.look_weight * looked + options.tell_weight * told).backward()
        torch.nn.utils.clip_grad_norm_(list(trained.values()), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss))
        guide_losses.append((float(looked), float(told)))
        if (step + 1) % 50 == 0:
            recent = sum(losses[-50:]) / 50
            look, tell = (sum(column) / 50 for column in zip(*guide_losses[-50:], strict=True))
            print(
                f"step {step + 1}/{options.steps}: loss {recent:.4f}, guide: look {look:.3f} tell {tell:.3f}, "
                f"background {background:.2f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        if options.eval_every and ((step + 1) % options.eval_every == 0 or step + 1 == options.steps):
            model.eval()
            accuracy = held_out_accuracy(model, held_out)
            model.train()
            print(f"step {step + 1}: held-out exact match {accuracy}", flush=True)
    model.eval()
    metadata = checkpoint_metadata(
        model_cfg,
        seed=options.seed,
        command=command,
        images=options.images,
        steps=options.steps,
        final_loss=sum(losses[-50:]) / min(50, len(losses)),
        held_out=accuracy,
        **({"tokenizer": loaded.tokenizer.backend_tokenizer.to_str()} if options.vocab else {}),
    )
    from safetensors.torch import save

    state = {name: parameter.detach().contiguous() for name, parameter in trained.items()}
    write_bytes(out, save(state, metadata={key: json.dumps(value) for key, value in metadata.items()}))
    print(
        f"written: {out} ({out.stat().st_size / 1e6:.2f} MB, {len(state)} tensors) in "
        f"{(time.perf_counter() - started) / 60:.1f} min"
    )
    return out
