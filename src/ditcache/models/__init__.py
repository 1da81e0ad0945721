"""Model support: one file per model family, each a short declaration over the helpers in ``_diffusers``.

:data:`MODEL_TABLE` maps a model class name to the module that registers its extractor (and declares its preset
rules). Nothing here is imported with ``import ditcache``: the core imports a model's module on the first lookup of
its class (diffusers' lazy block-registry pattern), so the diffusers model modules load only for the models in use.

:data:`UNSUPPORTED` is the explicit record of the diffusers 0.42 DiT classes ditcache knows and does not cache,
with the reason; they map to ``_unsupported``, whose extractor refuses them at apply time with that reason.

Layer rule: a model file imports ``core``, ``presets`` (and diffusers, lazily) and never another model file or a
cache.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MODEL_TABLE", "SUPPORTED", "UNSUPPORTED"]

SUPPORTED: Final[dict[str, str]] = {
    "AceStepTransformer1DModel": "ditcache.models.families.ace_step",
    "AllegroTransformer3DModel": "ditcache.models.families.allegro",
    "AnyFlowTransformer3DModel": "ditcache.models.families.anyflow",
    "AuraFlowTransformer2DModel": "ditcache.models.families.auraflow",
    "BriaFiboTransformer2DModel": "ditcache.models.families.bria_fibo",
    "BriaTransformer2DModel": "ditcache.models.families.bria",
    "ChromaTransformer2DModel": "ditcache.models.families.chroma",
    "ChronoEditTransformer3DModel": "ditcache.models.families.chronoedit",
    "CogVideoXTransformer3DModel": "ditcache.models.families.cogvideox",
    "CogView3PlusTransformer2DModel": "ditcache.models.families.cogview",
    "CogView4Transformer2DModel": "ditcache.models.families.cogview",
    "ConsisIDTransformer3DModel": "ditcache.models.families.consisid",
    "CosmosTransformer3DModel": "ditcache.models.families.cosmos",
    "DiTTransformer2DModel": "ditcache.models.families.dit",
    "EasyAnimateTransformer3DModel": "ditcache.models.families.easyanimate",
    "ErnieImageTransformer2DModel": "ditcache.models.families.ernie_image",
    "Flux2Transformer2DModel": "ditcache.models.families.flux2",
    "FluxTransformer2DModel": "ditcache.models.families.flux",
    "HeliosTransformer3DModel": "ditcache.models.families.helios",
    "HiDreamImageTransformer2DModel": "ditcache.models.families.hidream",
    "HunyuanImageTransformer2DModel": "ditcache.models.families.hunyuan_image",
    "HunyuanVideo15Transformer3DModel": "ditcache.models.families.hunyuan_video15",
    "HunyuanVideoFramepackTransformer3DModel": "ditcache.models.families.hunyuan_video_framepack",
    "HunyuanVideoTransformer3DModel": "ditcache.models.families.hunyuan_video",
    "Ideogram4Transformer2DModel": "ditcache.models.families.ideogram4",
    "JoyImageEditPlusTransformer3DModel": "ditcache.models.families.joyimage_plus",
    "JoyImageEditTransformer3DModel": "ditcache.models.families.joyimage",
    "Kandinsky5Transformer3DModel": "ditcache.models.families.kandinsky5",
    "Krea2Transformer2DModel": "ditcache.models.families.krea2",
    "LTXVideoTransformer3DModel": "ditcache.models.families.ltx",
    "LongCatAudioDiTTransformer": "ditcache.models.families.longcat_audio",
    "LongCatImageTransformer2DModel": "ditcache.models.families.longcat_image",
    "Lumina2Transformer2DModel": "ditcache.models.families.lumina2",
    "LuminaNextDiT2DModel": "ditcache.models.families.lumina_next",
    "MiniMaxMusic3Transformer1DModel": "ditcache.models.families.minimax_music3",
    "MochiTransformer3DModel": "ditcache.models.families.mochi",
    "MotifVideoTransformer3DModel": "ditcache.models.families.motif_video",
    "NucleusMoEImageTransformer2DModel": "ditcache.models.families.nucleus_moe",
    "OmniGenTransformer2DModel": "ditcache.models.families.omnigen",
    "OvisImageTransformer2DModel": "ditcache.models.families.ovis_image",
    "PRXTransformer2DModel": "ditcache.models.families.prx",
    "PixArtTransformer2DModel": "ditcache.models.families.pixart",
    "QwenImageTransformer2DModel": "ditcache.models.families.qwenimage",
    "SD3Transformer2DModel": "ditcache.models.families.sd3",
    "SanaTransformer2DModel": "ditcache.models.families.sana",
    "SanaVideoTransformer3DModel": "ditcache.models.families.sana_video",
    "SkyReelsV2Transformer3DModel": "ditcache.models.families.skyreels_v2",
    "StableAudio3DiTModel": "ditcache.models.families.stable_audio3",
    "StableAudioDiTModel": "ditcache.models.families.stable_audio",
    "WanAnimateTransformer3DModel": "ditcache.models.families.wan_animate",
    "WanTransformer3DModel": "ditcache.models.families.wan",
    "WanVACETransformer3DModel": "ditcache.models.families.wan_vace",
    "ZImageTransformer2DModel": "ditcache.models.families.zimage",
}
"""Covered model class name -> module path of its extractor."""

UNSUPPORTED: Final[dict[str, str]] = {
    "AnyFlowFARTransformer3DModel": "chunk-autoregressive model: its forward has a KV-cache / autoregressive "
    "decoding mode whose block inputs change between calls",
    "BriaFibo2Transformer2DModel": "text bundles are re-injected at chosen layers and the sequence is re-packed"
    " between lists; no extractor yet",
    "Cosmos3OmniTransformer": "packed multi-modal (understanding + generation) sequence with its block loop in "
    "a helper; no extractor yet",
    "Flux3Transformer2DModel": "per-mode block lists in a ModuleDict run before the joint single-stream list, "
    "with per-token modulation; not covered in this round",
    "GlmImageTransformer2DModel": "GLM-Image: its forward has a KV-cache / autoregressive decoding mode whose "
    "block inputs change between calls (AR prefix KV caches per block)",
    "HunyuanDiT2DModel": "U-Net-style long skip connections cross every block slice (DBCache's middle blocks "
    "would need the skip stack in the cached state); no extractor yet",
    "Kandinsky6SRTransformer3DModel": "NABLA local patching around the blocks not mirrored yet; not covered in "
    "this round",
    "Kandinsky6Transformer3DModel": "fused video + audio streams with separate conditioning; the block stack "
    "has no audio stream yet",
    "LTX2VideoTransformer3DModel": "a second token stream of audio (not text) and STG perturbation of a block "
    "subset inside the forward: refused rather than cached wrongly",
    "LatteTransformer3DModel": "spatial and temporal blocks are interleaved with reshapes between them (the "
    "hidden states change shape inside the loop); no extractor yet",
    "MiniMaxH3Transformer3DModel": "packed multi-modal tokens with a per-token AdaLN index; not covered in this round",
    "QwenImage21Transformer2DModel": "Qwen-Image 2.1: its forward has a KV-cache / autoregressive decoding mode"
    " whose block inputs change between calls (prefix KV cache, block-causal segments)",
    "SanaWMTransformer3DModel": "chunked causal world model (camera conditions, block loop in a helper); no "
    "extractor yet",
    "WanAnimate2Transformer3DModel": "the unconditional call skips a block (the block set depends on the CFG "
    "branch) and its forward has a KV-cache / autoregressive decoding mode  whose block inputs change "
    "between calls",
}
"""Known diffusers DiT class name -> why ditcache refuses it."""

MODEL_TABLE: Final[dict[str, str]] = {
    **SUPPORTED,
    **{name: "ditcache.models._unsupported" for name in UNSUPPORTED if name not in SUPPORTED},
}
"""Model class name -> module path of its extractor (imported on first use)."""
