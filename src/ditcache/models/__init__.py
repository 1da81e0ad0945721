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
    "AceStepTransformer1DModel": "ditcache.models.ace_step",
    "AllegroTransformer3DModel": "ditcache.models.allegro",
    "AnyFlowTransformer3DModel": "ditcache.models.anyflow",
    "AuraFlowTransformer2DModel": "ditcache.models.auraflow",
    "BriaFiboTransformer2DModel": "ditcache.models.bria_fibo",
    "BriaTransformer2DModel": "ditcache.models.bria",
    "ChromaTransformer2DModel": "ditcache.models.chroma",
    "ChronoEditTransformer3DModel": "ditcache.models.chronoedit",
    "CogVideoXTransformer3DModel": "ditcache.models.cogvideox",
    "CogView3PlusTransformer2DModel": "ditcache.models.cogview",
    "CogView4Transformer2DModel": "ditcache.models.cogview",
    "ConsisIDTransformer3DModel": "ditcache.models.consisid",
    "CosmosTransformer3DModel": "ditcache.models.cosmos",
    "DiTTransformer2DModel": "ditcache.models.dit",
    "EasyAnimateTransformer3DModel": "ditcache.models.easyanimate",
    "ErnieImageTransformer2DModel": "ditcache.models.ernie_image",
    "Flux2Transformer2DModel": "ditcache.models.flux2",
    "FluxTransformer2DModel": "ditcache.models.flux",
    "HeliosTransformer3DModel": "ditcache.models.helios",
    "HiDreamImageTransformer2DModel": "ditcache.models.hidream",
    "HunyuanImageTransformer2DModel": "ditcache.models.hunyuan_image",
    "HunyuanVideo15Transformer3DModel": "ditcache.models.hunyuan_video15",
    "HunyuanVideoFramepackTransformer3DModel": "ditcache.models.hunyuan_video_framepack",
    "HunyuanVideoTransformer3DModel": "ditcache.models.hunyuan_video",
    "Ideogram4Transformer2DModel": "ditcache.models.ideogram4",
    "JoyImageEditPlusTransformer3DModel": "ditcache.models.joyimage_plus",
    "JoyImageEditTransformer3DModel": "ditcache.models.joyimage",
    "Kandinsky5Transformer3DModel": "ditcache.models.kandinsky5",
    "Krea2Transformer2DModel": "ditcache.models.krea2",
    "LTXVideoTransformer3DModel": "ditcache.models.ltx",
    "LongCatAudioDiTTransformer": "ditcache.models.longcat_audio",
    "LongCatImageTransformer2DModel": "ditcache.models.longcat_image",
    "Lumina2Transformer2DModel": "ditcache.models.lumina2",
    "LuminaNextDiT2DModel": "ditcache.models.lumina_next",
    "MiniMaxMusic3Transformer1DModel": "ditcache.models.minimax_music3",
    "MochiTransformer3DModel": "ditcache.models.mochi",
    "MotifVideoTransformer3DModel": "ditcache.models.motif_video",
    "NucleusMoEImageTransformer2DModel": "ditcache.models.nucleus_moe",
    "OmniGenTransformer2DModel": "ditcache.models.omnigen",
    "OvisImageTransformer2DModel": "ditcache.models.ovis_image",
    "PRXTransformer2DModel": "ditcache.models.prx",
    "PixArtTransformer2DModel": "ditcache.models.pixart",
    "QwenImageTransformer2DModel": "ditcache.models.qwenimage",
    "SD3Transformer2DModel": "ditcache.models.sd3",
    "SanaTransformer2DModel": "ditcache.models.sana",
    "SanaVideoTransformer3DModel": "ditcache.models.sana_video",
    "SkyReelsV2Transformer3DModel": "ditcache.models.skyreels_v2",
    "StableAudio3DiTModel": "ditcache.models.stable_audio3",
    "StableAudioDiTModel": "ditcache.models.stable_audio",
    "WanAnimateTransformer3DModel": "ditcache.models.wan_animate",
    "WanTransformer3DModel": "ditcache.models.wan",
    "WanVACETransformer3DModel": "ditcache.models.wan_vace",
    "ZImageTransformer2DModel": "ditcache.models.zimage",
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
