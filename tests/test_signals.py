"""Signals recomputed for the baselines agree with what the model itself produces."""

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

from baselines.signals import cls_attention, received_attention


@pytest.mark.parametrize("feature_layer", [-2, -1, 3])
def test_cls_attention_matches_the_models_own_attention_maps(feature_layer):
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=6, num_attention_heads=4, image_size=56, patch_size=14
    )
    model = CLIPVisionModel(config).eval()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(torch.randn(2, 3, 56, 56), output_hidden_states=True, output_attentions=True)
        # attentions has one entry per layer, hidden_states one more (the embeddings first)
        producing_layer = feature_layer if feature_layer < 0 else feature_layer - 1
        layer_input = out.hidden_states[producing_layer - 1 if feature_layer < 0 else producing_layer]
        ours = cls_attention(model, layer_input, feature_layer)
    reference = out.attentions[producing_layer][:, :, 0, 1:]
    assert ours.shape == (2, 4, 16)
    assert torch.allclose(ours, reference, atol=1e-6)


def test_feature_layer_out_of_range():
    config = CLIPVisionConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=2, num_attention_heads=2)
    with pytest.raises(ValueError, match="feature_layer=5"):
        cls_attention(CLIPVisionModel(config), torch.zeros(1, 2, 8), 5)


@pytest.mark.parametrize("feature_layer", [-1, -2, 2])
def test_received_attention_is_the_column_mean_of_the_models_own_attention(feature_layer):
    torch.manual_seed(0)
    config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, image_size=56, patch_size=14
    )
    model = SiglipVisionModel(config).eval()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(torch.randn(5, 3, 56, 56), output_hidden_states=True, output_attentions=True)
        producing_layer = feature_layer if feature_layer < 0 else feature_layer - 1
        layer_input = out.hidden_states[producing_layer - 1 if feature_layer < 0 else producing_layer]
        ours = received_attention(model, layer_input, feature_layer, chunk=2)
    reference = out.attentions[producing_layer].mean(dim=-2)  # (B, H, N): mean over the query rows
    assert ours.shape == (5, 4, 16)
    assert torch.allclose(ours, reference, atol=1e-6)
    assert not torch.allclose(ours, torch.full_like(ours, 1 / 16), atol=1e-3)  # not the constant row mean
