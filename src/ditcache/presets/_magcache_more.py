"""More published MagCache curves (merged into ``MAG_RATIO_PRESETS``), each with its source.

Numbers copied verbatim, padding prefix included. ``Zehong-Ma/ComfyUI-MagCache`` is cited at HEAD 47bdd2a
(``nodes.py``, ``SUPPORTED_MODELS_MAG_RATIOS``; recommended settings from its README); vLLM-Omni at 0d8c632.
"""

from __future__ import annotations

from ditcache.presets._curves import MagRatioPreset, _padded

__all__ = ["MORE_MAG_RATIO_PRESETS"]

_COMFY = "Zehong-Ma/ComfyUI-MagCache, nodes.py SUPPORTED_MODELS_MAG_RATIOS"

# The tables keep a compact number layout; the formatter would put one number per line.
# fmt: off
MORE_MAG_RATIO_PRESETS: dict[str, MagRatioPreset] = {
    "flux.2-dev-vllm-omni": MagRatioPreset(
        (
            1.0, 0.96528, 1.11559, 1.0565, 1.00425, 1.0805, 0.98616, 1.09289, 1.03196, 1.06679, 1.03941, 1.05375,
            1.03128, 1.05349, 1.01983, 1.05535, 1.0662, 1.05748, 1.00318, 1.05222, 1.04556, 1.0506, 1.05058, 1.05219,
            1.02025, 1.05052, 1.04143, 1.0498,
        ),
        "vllm-project/vllm-omni, vllm_omni/diffusion/cache/magcache/strategy.py "
        "(Flux2MagCacheStrategy.FLUX2_MAG_RATIOS)",
        num_steps=28,
        interleaved=False,
        threshold=0.24,
        max_skip_steps=5,
        retention_ratio=0.1,
        note=(
            "vLLM-Omni's curve for Flux2Transformer2DModel, with its backend defaults (E=0.24, K=5, R=0.1); no "
            "calibration provenance is given."
        ),
    ),
    "chroma": MagRatioPreset(
        _padded(2, (
            1.00781, 1.01562, 1.03906, 1.03906, 1.05469, 1.05469, 1.07031, 1.07031, 1.04688, 1.04688, 1.03906,
            1.03906, 1.03906, 1.03906, 1.01562, 1.01562, 1.05469, 1.05469, 0.99609, 0.99609, 1.02344, 1.02344,
            1.01562, 1.01562, 0.99609, 0.99609, 1.0, 1.0, 0.99219, 0.99219, 1.00781, 1.00781, 1.00781, 1.00781,
            0.97656, 0.97656, 0.98828, 0.98828, 0.97266, 0.97266, 1.0, 1.0, 0.93359, 0.93359, 0.94922, 0.94922,
            0.92578, 0.92578, 1.0625, 1.0625,
        )),
        f"{_COMFY} ('chroma')",
        num_steps=26,
        interleaved=True,
        threshold=0.1,
        max_skip_steps=2,
        retention_ratio=0.25,
        note=(
            "ComfyUI ChromaTransformer, 26 steps with CFG (cond/uncond interleaved); README: E=0.10, R=0.25, K=2."
        ),
    ),
    "hunyuanvideo1.5-20steps": MagRatioPreset(
        _padded(2, (
            1.01172, 1.00293, 0.9873, 1.0127, 1.01465, 0.98926, 0.99805, 1.00098, 0.99512, 0.99365, 0.99512, 0.99561,
            0.99316, 0.99365, 0.99365, 0.99365, 0.99316, 0.99316, 0.99268, 0.99268, 0.9917, 0.9917, 0.99023, 0.99023,
            0.98828, 0.98877, 0.98633, 0.98633, 0.9834, 0.9834, 0.97949, 0.97998, 0.97363, 0.97363, 0.96436, 0.96436,
            0.94824, 0.94873,
        )),
        f"{_COMFY} ('hunyuan_video1.5')",
        num_steps=20,
        interleaved=True,
        threshold=0.03,
        max_skip_steps=2,
        retention_ratio=0.25,
        note=(
            "HunyuanVideo-1.5 T2V, 20 steps with CFG; README: E=0.03, R=0.25, K=2 (ComfyUI uses it for <= 20 steps)."
        ),
    ),
    "hunyuanvideo1.5-40steps": MagRatioPreset(
        _padded(2, (
            1.04199, 1.01953, 1.01172, 1.01855, 1.00293, 1.00586, 1.00098, 1.00195, 1.0, 1.00098, 0.99805, 0.99902,
            0.99854, 0.99805, 0.99658, 0.99756, 0.99707, 0.99512, 0.99609, 0.99609, 0.99658, 0.99658, 0.99658,
            0.99805, 0.99658, 0.99707, 0.99561, 0.99561, 0.99561, 0.99658, 0.99658, 0.99658, 0.99609, 0.99658,
            0.99512, 0.99561, 0.99463, 0.99512, 0.99463, 0.99512, 0.99463, 0.99512, 0.99365, 0.99414, 0.99365,
            0.99365, 0.99219, 0.99219, 0.99219, 0.99268, 0.99072, 0.99121, 0.99072, 0.99072, 0.98926, 0.98975,
            0.9873, 0.98779, 0.98535, 0.98584, 0.9834, 0.9834, 0.97998, 0.97998, 0.97607, 0.97607, 0.96973, 0.96973,
            0.96338, 0.96338, 0.9502, 0.9502, 0.93066, 0.93066, 0.896, 0.896, 0.81787, 0.81836,
        )),
        f"{_COMFY} ('hunyuan_video1.5_40steps')",
        num_steps=40,
        interleaved=True,
        threshold=0.03,
        max_skip_steps=2,
        retention_ratio=0.25,
        note=(
            "HunyuanVideo-1.5 T2V, 40 steps with CFG (ComfyUI uses it for > 20 steps); the README settings of the "
            "20-step curve."
        ),
    ),
    "wan2.1-vace-1.3b": MagRatioPreset(
        _padded(2, (
            1.00129, 1.0019, 1.00056, 1.00053, 0.99776, 0.99746, 0.99726, 0.99789, 0.99725, 0.99785, 0.9958, 0.99625,
            0.99703, 0.99728, 0.99863, 0.9988, 0.99735, 0.99731, 0.99714, 0.99707, 0.99697, 0.99687, 0.9969, 0.99683,
            0.99695, 0.99702, 0.99697, 0.99701, 0.99608, 0.99617, 0.99721, 0.9973, 0.99649, 0.99657, 0.99659,
            0.99667, 0.99727, 0.99731, 0.99603, 0.99612, 0.99652, 0.99659, 0.99635, 0.9964, 0.9958, 0.99585, 0.99581,
            0.99585, 0.99573, 0.99579, 0.99531, 0.99534, 0.99505, 0.99508, 0.99481, 0.99484, 0.99426, 0.99433,
            0.99403, 0.99406, 0.99357, 0.9936, 0.99302, 0.99305, 0.99243, 0.99247, 0.9916, 0.99164, 0.99085, 0.99087,
            0.98985, 0.9899, 0.98857, 0.98859, 0.98717, 0.98721, 0.98551, 0.98556, 0.98301, 0.98305, 0.9805, 0.98055,
            0.97635, 0.97641, 0.97183, 0.97187, 0.96496, 0.965, 0.95526, 0.95533, 0.94102, 0.94104, 0.91809, 0.91815,
            0.87871, 0.87879, 0.80141, 0.80164,
        )),
        "Zehong-Ma/MagCache, MagCache4Wan2.1/magcache_generate.py:1142",
        num_steps=50,
        interleaved=True,
        threshold=0.02,
        max_skip_steps=3,
        retention_ratio=0.2,
        note=(
            "Wan2.1-VACE-1.3B (README: K=3, E=0.02, R=0.2); for VACE-14B the authors use the T2V-14B curve "
            "('wan2.1-t2v-14b', line 1144)."
        ),
    ),
}
# fmt: on
