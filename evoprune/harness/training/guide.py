"""`AttentionGuide`: the training-only losses that teach the tiny models' heads where to look and what to
tell, with the heads and attributes its targets name."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from evoprune.harness.data.generated_data import COLORS, SHAPES
from evoprune.harness.data.shapes_data import COUNTS, GRID
from evoprune.harness.data.smoke_video import DIRECTIONS, KINDS

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
