"""The training and held-out examples: the tower's features per image (`Examples`) or clip (`ClipExamples`),
the prompts as token ids around them, and each one's `AttentionGuide` targets."""

from __future__ import annotations

import collections
import functools
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from evoprune.harness.data.generated_data import COLORS, SHAPES
from evoprune.harness.data.shapes_data import COUNTS, GRID, describe, foreground_patches
from evoprune.harness.data.smoke_video import (
    DIRECTIONS,
    KINDS,
    TASK_KINDS,
    doc_kind,
    render_clip,
    shape_boxes,
    write_mp4,
)
from evoprune.harness.inference.layout import pool_grid, visual_sequence
from evoprune.harness.inference.pipeline import encode_frames
from evoprune.harness.inference.video import read_video, sample_frame_indices, time_instruction
from evoprune.harness.models.tiny_tokenizers import IMAGE_TOKEN
from evoprune.harness.training.guide import CATEGORIES, COUNT_HEADS, NOWHERE, SHAPE_HEADS
from evoprune.harness.training.prompts import (
    COLOR_WORDS,
    DESCRIBE_PROMPT,
    OPTION_LINES,
    VIDEO_TASK_DIR,
    answer_letter,
    referents,
    task_prompts,
)


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
