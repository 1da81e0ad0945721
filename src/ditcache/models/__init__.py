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
    "AllegroTransformer3DModel": "ditcache.models.allegro",
    "AnyFlowTransformer3DModel": "ditcache.models.anyflow",
    "AuraFlowTransformer2DModel": "ditcache.models.auraflow",
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
    "Flux2Transformer2DModel": "ditcache.models.flux2",
    "FluxTransformer2DModel": "ditcache.models.flux",
    "HiDreamImageTransformer2DModel": "ditcache.models.hidream",
    "HunyuanImageTransformer2DModel": "ditcache.models.hunyuan_image",
    "HunyuanVideo15Transformer3DModel": "ditcache.models.hunyuan_video15",
    "HunyuanVideoTransformer3DModel": "ditcache.models.hunyuan_video",
    "Ideogram4Transformer2DModel": "ditcache.models.ideogram4",
    "JoyImageEditPlusTransformer3DModel": "ditcache.models.joyimage_plus",
    "JoyImageEditTransformer3DModel": "ditcache.models.joyimage",
    "Kandinsky5Transformer3DModel": "ditcache.models.kandinsky5",
    "Krea2Transformer2DModel": "ditcache.models.krea2",
    "LTXVideoTransformer3DModel": "ditcache.models.ltx",
    "LongCatImageTransformer2DModel": "ditcache.models.longcat_image",
    "Lumina2Transformer2DModel": "ditcache.models.lumina2",
    "LuminaNextDiT2DModel": "ditcache.models.lumina_next",
    "MochiTransformer3DModel": "ditcache.models.mochi",
    "NucleusMoEImageTransformer2DModel": "ditcache.models.nucleus_moe",
    "OvisImageTransformer2DModel": "ditcache.models.ovis_image",
    "PRXTransformer2DModel": "ditcache.models.prx",
    "PixArtTransformer2DModel": "ditcache.models.pixart",
    "QwenImageTransformer2DModel": "ditcache.models.qwenimage",
    "SD3Transformer2DModel": "ditcache.models.sd3",
    "SanaTransformer2DModel": "ditcache.models.sana",
    "SanaVideoTransformer3DModel": "ditcache.models.sana_video",
    "SkyReelsV2Transformer3DModel": "ditcache.models.skyreels_v2",
    "StableAudioDiTModel": "ditcache.models.stable_audio",
    "WanTransformer3DModel": "ditcache.models.wan",
    "WanVACETransformer3DModel": "ditcache.models.wan_vace",
    "ZImageTransformer2DModel": "ditcache.models.zimage",
}
"""Covered model class name -> module path of its extractor."""

_KV = "its forward has a KV-cache / autoregressive decoding mode whose block inputs change between calls"

UNSUPPORTED: Final[dict[str, str]] = {
    "AceStepTransformer1DModel": "ACE-Step (music): per-layer sliding/full attention masks; not covered in this round",
    "AnyFlowFARTransformer3DModel": f"chunk-autoregressive model: {_KV}",
    "BriaFibo2Transformer2DModel": "text bundles are re-injected at chosen layers and the sequence is re-packed "
    "between lists; no extractor yet",
    "BriaFiboTransformer2DModel": "a text-encoder layer is projected and injected into the text stream before "
    "every block; not covered in this round",
    "Cosmos3OmniTransformer": "packed multi-modal (understanding + generation) sequence with its block loop in a "
    "helper; no extractor yet",
    "ErnieImageTransformer2DModel": "its blocks run on sequence-first (tokens, batch, width) tensors, which the"
    " block-stack contract (batch first) does not describe yet",
    "Flux3Transformer2DModel": "per-mode block lists in a ModuleDict run before the joint single-stream list, "
    "with per-token modulation; not covered in this round",
    "GlmImageTransformer2DModel": f"GLM-Image: {_KV} (AR prefix KV caches per block)",
    "HeliosTransformer3DModel": "history / multi-term context packing (87 lines of preprocessing) not mirrored "
    "yet; not covered in this round",
    "HunyuanDiT2DModel": "U-Net-style long skip connections cross every block slice (DBCache's middle blocks "
    "would need the skip stack in the cached state); no extractor yet",
    "HunyuanVideoFramepackTransformer3DModel": "clean-latent history packing (61 lines of preprocessing) not "
    "mirrored yet; not covered in this round",
    "Kandinsky6SRTransformer3DModel": "NABLA local patching around the blocks not mirrored yet; not covered in "
    "this round",
    "Kandinsky6Transformer3DModel": "fused video + audio streams with separate conditioning; the block stack "
    "has no audio stream yet",
    "LTX2VideoTransformer3DModel": "a second token stream of audio (not text) and STG perturbation of a block "
    "subset inside the forward: refused rather than cached wrongly",
    "LatteTransformer3DModel": "spatial and temporal blocks are interleaved with reshapes between them (the hidden "
    "states change shape inside the loop); no extractor yet",
    "LongCatAudioDiTTransformer": "LongCat-Audio: its forward has no checkpointing branch and a global AdaLN; "
    "not covered in this round",
    "MiniMaxH3Transformer3DModel": "packed multi-modal tokens with a per-token AdaLN index; not covered in this round",
    "MiniMaxMusic3Transformer1DModel": "MiniMax Music 3: time tokens prepended without AdaLN; not covered in "
    "this round",
    "MotifVideoTransformer3DModel": "50 lines of postprocessing not mirrored yet; not covered in this round",
    "OmniGenTransformer2DModel": "an LLM-style packed sequence with input images as tokens and no AdaLN "
    "modulation; not covered in this round",
    "QwenImage21Transformer2DModel": f"Qwen-Image 2.1: {_KV} (prefix KV cache, block-causal segments)",
    "SanaWMTransformer3DModel": "chunked causal world model (camera conditions, block loop in a helper); no "
    "extractor yet",
    "StableAudio3DiTModel": "memory tokens and a local sequence must be carried in the cached state; not "
    "covered in this round",
    "WanAnimate2Transformer3DModel": f"the unconditional call skips a block (the block set depends on the CFG "
    f"branch) and {_KV}",
    "WanAnimateTransformer3DModel": "face-adapter injection every N blocks from motion/face encoders; not "
    "covered in this round",
}
"""Known diffusers DiT class name -> why ditcache refuses it."""

MODEL_TABLE: Final[dict[str, str]] = {
    **SUPPORTED,
    **{name: "ditcache.models._unsupported" for name in UNSUPPORTED if name not in SUPPORTED},
}
"""Model class name -> module path of its extractor (imported on first use)."""
