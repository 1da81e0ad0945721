"""OmniGenTransformer2DModel: packed [condition; time; image] sequence, an input image over its placeholders, mask."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import OmniGenTransformer2DModel
from torch import nn

from cases import Call, Case, built, randn, seeded

TEXT = 6  # tokens 1-4 of the first prompt are the placeholder of a 4x4 input image (2x2 patches)


def build() -> nn.Module:
    model = built(
        OmniGenTransformer2DModel,
        in_channels=4,
        patch_size=2,
        hidden_size=32,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=48,
        num_layers=2,
        pad_token_id=0,
        vocab_size=50,
        max_position_embeddings=256,
        original_max_position_embeddings=64,
        rope_scaling={"short_factor": [1.0] * 8, "long_factor": [1.0] * 8},
        pos_embed_max_size=16,
        time_step_dim=16,
    )()
    # from_pretrained(torch_dtype=...) loads the persistent pos_embed buffer in that dtype (OmniGen's forward needs
    # it to match the weights); the suite's cast moves parameters only, so hold it as a frozen parameter
    patch = model.patch_embedding
    pos_embed = patch.pos_embed
    del patch.pos_embed
    patch.pos_embed = nn.Parameter(pos_embed, requires_grad=False)
    return model


def calls(model: nn.Module, batch: int, return_dict: bool, *, image: bool = False) -> list[Call]:
    gen = seeded(40)
    seq = TEXT + 1 + 16  # condition, time token, 4x4 output patches
    input_ids = torch.randint(1, 50, (batch, TEXT), generator=gen)
    mask = torch.ones(batch, seq, seq)
    if batch > 1:
        mask[1, :, :2] = 0  # the second sample's first tokens are padding
    fixed: dict[str, Any] = {
        "input_ids": input_ids,
        "input_img_latents": [randn(gen, 1, 4, 4, 4)] if image else [],
        "input_image_sizes": {0: [(1, 5)]} if image else {},
        "attention_mask": mask,
        "position_ids": torch.arange(seq).expand(batch, -1),
        "return_dict": return_dict,
    }
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (0.1, 0.35, 0.6, 0.85)
    ]


CASES = [
    Case("omnigen", build, calls, tags=frozenset({"loop"}), condition="input_ids", attention_kwargs=None),
    Case(
        "omnigen-image",
        build,
        calls,
        {"image": True},
        tags=frozenset({"dtype", "checkpointing"}),
        condition="input_ids",
        attention_kwargs=None,
    ),
]
