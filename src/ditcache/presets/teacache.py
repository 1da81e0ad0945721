"""Published TeaCache rescaling coefficients, each with its source.

TeaCache rescales the relative L1 distance ``x`` of the modulated input between consecutive steps with a 4th-order
polynomial ``c0*x^4 + c1*x^3 + c2*x^2 + c3*x + c4`` (highest power first, ``numpy.poly1d`` order) fitted per
model, sometimes per mode. A preset is keyed by (model, mode): coefficients are not interchangeable between
checkpoints or between Wan's two indicator modes.

Sources (all public repositories; numbers copied as published):

* ``ali-vilab/TeaCache`` (the TeaCache authors), per-model folders ``TeaCache4FLUX``, ``TeaCache4Wan2.1``,
  ``TeaCache4ConsisID``;
* ``welltop-cn/ComfyUI-TeaCache`` ``nodes.py`` (FLUX.1-Kontext);
* ``vllm-project/vllm-omni`` ``teacache/config.py`` (Qwen-Image: no official set exists; vLLM-Omni ships a
  hand-rounded set it attributes to ComfyUI-TeaCache).
"""

from __future__ import annotations

from typing import Any

import attrs

from ditcache.presets.rules import NoPresetError, preset_key

__all__ = ["TEACACHE_PRESETS", "TeaCachePreset", "infer_teacache_model"]


@attrs.frozen
class TeaCachePreset:
    """Coefficients and the settings that go with them for one model (and mode)."""

    coefficients: tuple[float, float, float, float, float]
    source: str
    indicator: str | None = None
    """None for the context's ``modulated_input``; else the ``extra_states`` key of the indicator tensor."""
    warmup_steps: int = 1
    force_last_step: bool = True
    recommended_thresholds: tuple[float, ...] = ()
    note: str = ""


_WAN_SRC = "ali-vilab/TeaCache, TeaCache4Wan2.1/teacache_generate.py"

TEACACHE_PRESETS: dict[str, TeaCachePreset] = {
    "cosmos-1.0-7b": TeaCachePreset(
        (2.71156237e02, -9.19775607e01, 2.24437250e00, 2.08355751e00, 1.41776330e-01),
        "ali-vilab/TeaCache, TeaCache4Cosmos (text2world and video2world scripts)",
        note="Published for Cosmos-1.0-Diffusion-7B Text2World and Video2World.",
    ),
    "flux.1-dev": TeaCachePreset(
        (4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01),
        "ali-vilab/TeaCache, TeaCache4FLUX/teacache_flux.py",
        recommended_thresholds=(0.25, 0.4, 0.6, 0.8),
        note="README (A800, 28 steps): 0.25 -> 1.5x, 0.4 -> 1.8x, 0.6 -> 2.0x, 0.8 -> 2.25x",
    ),
    "flux.1-kontext-dev": TeaCachePreset(
        (-1.04655119e03, 3.12563399e02, -1.69500694e01, 4.10995971e-01, 3.74537863e-02),
        "welltop-cn/ComfyUI-TeaCache, nodes.py",
        recommended_thresholds=(0.22,),
    ),
    "mochi-1-preview": TeaCachePreset(
        (-3.51241319e03, 8.11675948e02, -6.09400215e01, 2.42429681e00, 3.05291719e-03),
        "ali-vilab/TeaCache, TeaCache4Mochi/teacache_mochi.py",
        recommended_thresholds=(0.06, 0.09),
        note="README (A800, ~30 min): 0.06 -> 1.5x, 0.09 -> 2.1x",
    ),
    "qwen-image": TeaCachePreset(
        (-4.50000000e02, 2.80000000e02, -4.50000000e01, 3.20000000e00, -2.00000000e-02),
        "vllm-project/vllm-omni, teacache/config.py",
        note=(
            "No official TeaCache set exists for Qwen-Image. vLLM-Omni ships these hand-rounded values and "
            "attributes them to ComfyUI-TeaCache; calibrate for best results."
        ),
    ),
    "hunyuanvideo": TeaCachePreset(
        (7.33226126e02, -4.01131952e02, 6.75869174e01, -3.14987800e00, 9.61237896e-02),
        "ali-vilab/TeaCache, TeaCache4HunyuanVideo/teacache_sample_video.py",
        recommended_thresholds=(0.1, 0.15),
        note="README (A800): 540p / 720p 0.1 -> 1.6x, 0.15 -> 2.1x",
    ),
    "lumina-next-sft": TeaCachePreset(
        (393.76566581, -603.50993606, 209.10239044, -23.00726601, 0.86377344),
        "ali-vilab/TeaCache, TeaCache4Lumina-T2X",
        recommended_thresholds=(0.2, 0.3, 0.4, 0.5),
        note="README (A800, ~17 s): 0.2 -> 1.5x, 0.3 -> 1.9x, 0.4 -> 2.4x, 0.5 -> 2.8x",
    ),
    "lumina2-v1": TeaCachePreset(
        (393.76566581, -603.50993606, 209.10239044, -23.00726601, 0.86377344),
        "ali-vilab/TeaCache, TeaCache4Lumina2/teacache_lumina2.py",
        recommended_thresholds=(0.2, 0.3, 0.4, 0.5),
        note=(
            "The repository default. README (4090, 50 steps, ~25 s): 0.2 -> ~20 s, 0.3 -> ~16 s, 0.4 -> ~12 s, "
            "0.5 -> ~10 s"
        ),
    ),
    "lumina2-v2": TeaCachePreset(
        (225.7042019806413, -608.8453716535591, 304.1869942338369, 124.21267720116742, -1.4089066892956552),
        "ali-vilab/TeaCache, TeaCache4Lumina2/README.md",
        recommended_thresholds=(0.2, 0.3, 0.5, 1.1),
        note="README: 0.2 -> 1.5x, 0.3 -> 1.6x, 0.5 -> 1.8x, 1.1 -> 2.1x",
    ),
    "lumina2-comfyui": TeaCachePreset(
        (-8.74643948e02, 4.66059906e02, -7.51559762e01, 5.32836175e00, -3.27258296e-02),
        "welltop-cn/ComfyUI-TeaCache, nodes.py (Lumina-Image-2.0)",
    ),
    "hidream-i1-full": TeaCachePreset(
        (-3.13605009e04, -7.12425503e02, 4.91363285e01, 8.26515490e00, 1.08053901e-01),
        "ali-vilab/TeaCache, TeaCache4HiDream-I1/teacache_hidream_i1.py",
        recommended_thresholds=(0.17, 0.25, 0.3, 0.45),
        note="README (A100, ~50 s): 0.17 -> 1.5x, 0.25 -> 1.7x, 0.3 -> 2.0x, 0.45 -> 2.6x",
    ),
    "hidream-i1-dev": TeaCachePreset(
        (1.39997273, -4.30130469, 5.01534416, -2.20504164, 0.93942874),
        "welltop-cn/ComfyUI-TeaCache, nodes.py (HiDream-I1-Dev)",
    ),
    "hidream-i1-fast": TeaCachePreset(
        (2.26509623, -6.88864563, 7.61123826, -3.10849353, 0.99927602),
        "welltop-cn/ComfyUI-TeaCache, nodes.py (HiDream-I1-Fast)",
    ),
    "longcat-image-vllm-omni": TeaCachePreset(
        (652.5980, -424.1615, 84.5526, -4.5923, 0.1694),
        "vllm-project/vllm-omni, teacache/config.py (LongCatImageTransformer2DModel)",
        note="vLLM-Omni's set for LongCat-Image; no calibration provenance is given.",
    ),
    "ltx-video-0.9.1": TeaCachePreset(
        (2.14700694e01, -1.28016453e01, 2.31279151e00, 7.92487521e-01, 9.69274326e-03),
        "ali-vilab/TeaCache, TeaCache4LTX-Video/teacache_ltx.py",
        recommended_thresholds=(0.03, 0.05),
        note="README (A800): 0.03 -> 1.6x, 0.05 -> 2.1x",
    ),
    "cogvideox-2b": TeaCachePreset(
        (-3.10658903e01, 2.54732368e01, -5.92380459e00, 1.75769064e00, -3.61568434e-03),
        "ali-vilab/TeaCache, eval/teacache/experiments/cogvideox.py",
        note="Also in TeaCache4CogVideoX1.5's coefficient dict.",
    ),
    "cogvideox-5b": TeaCachePreset(
        (-1.53880483e03, 8.43202495e02, -1.34363087e02, 7.97131516e00, -5.23162339e-02),
        "ali-vilab/TeaCache, eval/teacache/experiments/cogvideox.py",
        note="Published for CogVideoX-5b, CogVideoX-5b-I2V and ConsisID alike (also in TeaCache4CogVideoX1.5).",
    ),
    "consisid": TeaCachePreset(
        (-1.53880483e03, 8.43202495e02, -1.34363087e02, 7.97131516e00, -5.23162339e-02),
        "ali-vilab/TeaCache, TeaCache4ConsisID/teacache_sample_video.py",
        note="Published for ConsisID-preview; the same numbers as the cogvideox-5b set.",
    ),
    "cogvideox1.5-5b": TeaCachePreset(
        (2.50210439e02, -1.65061612e02, 3.57804877e01, -7.81551492e-01, 3.58559703e-02),
        "ali-vilab/TeaCache, TeaCache4CogVideoX1.5/teacache_sample_video.py",
    ),
    "cogvideox1.5-5b-i2v": TeaCachePreset(
        (1.22842302e02, -1.04088754e02, 2.62981677e01, -3.06009921e-01, 3.71213220e-02),
        "ali-vilab/TeaCache, TeaCache4CogVideoX1.5/teacache_sample_video.py",
    ),
    "stable-audio-open-vllm-omni": TeaCachePreset(
        (121.77490545701518, -153.7449426160371, 68.05368574596551, -12.281286412689623, 1.0733905006198015),
        "vllm-project/vllm-omni, teacache/config.py (StableAudioDiTModel)",
        note="vLLM-Omni's own estimate for Stable Audio Open 1.0 (marked 'estimated' there).",
    ),
    "wan2.1-t2v-1.3b": TeaCachePreset(
        (2.39676752e03, -1.31110545e03, 2.01331979e02, -8.29855975e00, 1.37887774e-01),
        _WAN_SRC + " (use_ret_steps=False)",
        recommended_thresholds=(0.05, 0.07, 0.08),
    ),
    "wan2.1-t2v-14b": TeaCachePreset(
        (-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404),
        _WAN_SRC + " (use_ret_steps=False)",
        recommended_thresholds=(0.14, 0.15, 0.2),
    ),
    "wan2.1-i2v-14b-480p": TeaCachePreset(
        (-3.02331670e02, 2.23948934e02, -5.25463970e01, 5.87348440e00, -2.01973289e-01),
        _WAN_SRC + " (use_ret_steps=False)",
        recommended_thresholds=(0.13, 0.19, 0.26),
    ),
    "wan2.1-i2v-14b-720p": TeaCachePreset(
        (-114.36346466, 65.26524496, -18.82220707, 4.91518089, -0.23412683),
        _WAN_SRC + " (use_ret_steps=False)",
        recommended_thresholds=(0.18, 0.2, 0.3),
    ),
    # "ret" mode: the indicator is the 6-way timestep projection (e0), the first 5 steps are always computed and
    # the last step is not forced (TeaCache4Wan2.1 with use_ret_steps=True).
    "wan2.1-t2v-1.3b-ret": TeaCachePreset(
        (-5.21862437e04, 9.23041404e03, -5.28275948e02, 1.36987616e01, -4.99875664e-02),
        _WAN_SRC + " (use_ret_steps=True)",
        indicator="timestep_proj",
        warmup_steps=5,
        force_last_step=False,
        recommended_thresholds=(0.05, 0.10),
    ),
    "wan2.1-t2v-14b-ret": TeaCachePreset(
        (-3.03318725e05, 4.90537029e04, -2.65530556e03, 5.87365115e01, -3.15583525e-01),
        _WAN_SRC + " (use_ret_steps=True)",
        indicator="timestep_proj",
        warmup_steps=5,
        force_last_step=False,
        recommended_thresholds=(0.10, 0.20),
    ),
    "wan2.1-i2v-14b-480p-ret": TeaCachePreset(
        (2.57151496e05, -3.54229917e04, 1.40286849e03, -1.35890334e01, 1.32517977e-01),
        _WAN_SRC + " (use_ret_steps=True)",
        indicator="timestep_proj",
        warmup_steps=5,
        force_last_step=False,
        recommended_thresholds=(0.20, 0.30),
    ),
    "wan2.1-i2v-14b-720p-ret": TeaCachePreset(
        (8.10705460e03, 2.13393892e03, -3.72934672e02, 1.66203073e01, -4.17769401e-02),
        _WAN_SRC + " (use_ret_steps=True)",
        indicator="timestep_proj",
        warmup_steps=5,
        force_last_step=False,
        recommended_thresholds=(0.20, 0.30),
    ),
    "framepack": TeaCachePreset(
        (7.33226126e02, -4.01131952e02, 6.75869174e01, -3.14987800e00, 9.61237896e-02),
        "lllyasviel/FramePack, diffusers_helper/models/hunyuan_video_packed.py",
        recommended_thresholds=(0.15,),
        note=(
            "FramePack's own TeaCache: the authors reuse the TeaCache4HunyuanVideo set (fitted on HunyuanVideo, "
            "not refitted for FramePack) with threshold 0.15."
        ),
    ),
}


def infer_teacache_model(module: Any) -> tuple[str, bool]:
    """The preset key for a module from its class and config: ``(key, exact)``.

    The rule is the one the model's file declares (:mod:`ditcache.presets.rules`). ``exact`` is False when the
    architecture matches no published checkpoint and the nearest preset of the same family is borrowed (a
    random-weight test model, say); callers log that. Raises ValueError when the family has no published
    coefficients at all.
    """
    try:
        return preset_key(module, "teacache")
    except NoPresetError as exc:
        if exc.note is not None:
            raise ValueError(
                f"model: no TeaCache coefficients are published for {exc.class_name} ({exc.note}); pass "
                "TeaCacheConfig(coefficients=[c4, c3, c2, c1, c0]) fitted for it (`ditcache calibrate` fits them)"
            ) from None
        raise ValueError(
            f"model: no TeaCache coefficients are known for {exc.class_name}; pass TeaCacheConfig(model=...) with "
            f"one of {sorted(TEACACHE_PRESETS)} or explicit coefficients=[c4, c3, c2, c1, c0]"
        ) from None
