"""ToMe (Bolya et al., ICLR 2023; official facebookresearch/ToMe) inside LLaVA's vision tower.

Plain bipartite soft matching through `evoprune.merge` / `evoprune.patch`, the machinery EvoPrune
uses, with everything EvoPrune adds switched off: the metric is the layer's keys averaged over
heads, the score the raw cosine similarity (no attention protection, no diversity term), merged
tokens are size-weighted averages, and attention is proportional (log size added to the logits), as
ToMe's ``apply_patch`` defaults. The schedule is ToMe's constant r per layer: r = ⌈(N − budget) / L⌉
over the L layers up to the feature layer, from the first layer on, the last merging layer taking
what is left, so the feature layer holds exactly ``budget`` patch tokens (ToMe itself merges r in
every layer and lands wherever that leads).

Deviations from the official code, all for LLaVA, none in the matching itself:
- ToMe's token order is unmerged a-tokens, then b-tokens (fine for a classifier's pooled output);
  here merged tokens are re-sorted by their earliest source position (``keep_order``), so the LLM
  reads them in spatial order, as EvoPrune's.
- ToMe keeps [CLS] on the a-side and forbids it to merge; here [CLS] is held out of the matching, so
  the alternation starts at the first patch token (the a/b roles of CLIP's patch tokens are swapped
  relative to ToMe's; on SigLIP, which has no [CLS], they are the same).
- Merging stops at the feature layer (LLaVA reads layer −2 of CLIP-L); later layers merge nothing.
- Ties between equal scores go to the lower index (stable sorts); ToMe's argsort is unstable.
"""

from __future__ import annotations

from evoprune.harness.inference.evoprune_pruner import EvoPrunePruner


class ToMePruner(EvoPrunePruner):
    """`evoprune.patch` with the ``constant`` schedule and ToMe's plain matching."""

    def __init__(self, budget: int | None, r: int | None = None, prop_attn: bool = True, keep_order: bool = True):
        super().__init__(
            budget,
            schedule="constant",
            r=r,
            prop_attn=prop_attn,
            keep_order=keep_order,
            metric="keys",
            sim_transform="none",
            use_attn=False,
            use_div=False,
        )
