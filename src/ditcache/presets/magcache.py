"""Published MagCache magnitude-ratio curves, each with its source.

MagCache (Ma et al., NeurIPS 2025, arXiv 2506.09045) thresholds the product of per-step *magnitude ratios*
``gamma_t = mean_tokens(||r_t||_2 / ||r_{t-1}||_2)`` of the block-stack residual ``r_t``, recorded once offline
per checkpoint. A curve has one entry per transformer call of one CFG branch; its first entry is a ``1.0``
padding (there is no ratio for the first step).

Two layouts are published, and each preset says which it has:

* **single** (FLUX, HunyuanVideo): one curve, ``num_steps`` entries, prefix ``[1.0]``;
* **interleaved** (Wan, Qwen-Image): the cond and uncond curves interleaved call by call (``cond, uncond, cond,
  ...``), ``2 * num_steps`` entries, prefix ``[1.0] * 2``; ``[0::2]`` is the cond curve, ``[1::2]`` the uncond
  curve (split this way by the authors' own ``nearest_interp`` resampling in ``MagCache4Wan2.1``).

The numbers are copied verbatim from the scripts named in each preset's ``source`` (``Zehong-Ma/MagCache``, the
MagCache authors, unless stated otherwise), padding included, so ``preset.ratios`` is exactly the array those
scripts index with their call counter.

Two FLUX.1-dev curves exist and are kept apart:

* ``"flux.1-dev"``: ``MagCache4FLUX/magcache_flux.py``; diffusers 0.42 ships the same numbers as
  ``diffusers.hooks.mag_cache.FLUX_MAG_RATIOS`` (the test suite checks they are equal);
* ``"flux.1-dev-vllm-omni"``: ``FluxMagCacheStrategy.FLUX_MAG_RATIOS`` of vLLM-Omni's MagCache backend, a
  different curve (no calibration provenance is given for it).
"""

from __future__ import annotations

from typing import Any

from ditcache.presets._curves import MagRatioPreset, _padded
from ditcache.presets._magcache_more import MORE_MAG_RATIO_PRESETS
from ditcache.presets.rules import NoPresetError, preset_key

__all__ = ["MAG_RATIO_PRESETS", "MagRatioPreset", "infer_magcache_model"]


_MC = "Zehong-Ma/MagCache"
_WAN21 = f"{_MC}, MagCache4Wan2.1/magcache_generate.py"
_WAN22 = f"{_MC}, MagCache4Wan2.2/magcache_generate.py"
_HUNYUAN = f"{_MC}, MagCache4HunyuanVideo/magcache_sample_video.py"

# The tables keep the published line grouping; the formatter would put one number per line.
# fmt: off
MAG_RATIO_PRESETS: dict[str, MagRatioPreset] = {
    "flux.1-dev": MagRatioPreset(
        _padded(1, (1.21094, 1.11719, 1.07812, 1.0625, 1.03906, 1.03125, 1.03906, 1.02344, 1.03125, 1.02344, 0.98047,
                    1.01562, 1.00781, 1.0, 1.00781, 1.0, 1.00781, 1.0, 1.0, 0.99609, 0.99609, 0.98047, 0.98828,
                    0.96484, 0.95703, 0.93359, 0.89062)),
        f"{_MC}, MagCache4FLUX/magcache_flux.py:459 (= diffusers.hooks.mag_cache.FLUX_MAG_RATIOS, diffusers 0.42)",
        num_steps=28,
        interleaved=False,
        threshold=0.24,
        max_skip_steps=5,
        retention_ratio=0.1,
        note=(
            "README (A800, 28 steps): E024K5R01 -> ~5.05 s from ~14.26 s (2.8x). The authors' script also forces "
            "a compute where round(step * 27 / (num_steps - 1)) == 11 (the 0.98047 dip); diffusers does not, and "
            "neither does ditcache (see docs/magcache.md)."
        ),
    ),
    "flux.1-dev-vllm-omni": MagRatioPreset(
        (1.0, 1.07313, 1.21035, 1.04432, 1.06818, 1.05547, 1.0183, 1.03405, 1.02574, 1.03042, 1.02739, 1.01955,
         1.01585, 1.02439, 1.01154, 1.01377, 1.00994, 1.01444, 1.00839, 1.02269, 1.0007, 1.00714, 1.00484,
         1.01381, 1.00426, 0.99764, 1.00778, 1.00233),
        "vllm-project/vllm-omni, vllm_omni/diffusion/cache/magcache/strategy.py "
        "(FluxMagCacheStrategy.FLUX_MAG_RATIOS)",
        num_steps=28,
        interleaved=False,
        threshold=0.24,
        max_skip_steps=5,
        retention_ratio=0.1,
        note="Differs from the MagCache authors' FLUX.1-dev curve; vLLM-Omni gives no calibration provenance.",
    ),
    "flux.1-kontext-dev": MagRatioPreset(
        _padded(1, (1.19531, 1.07812, 1.02344, 1.03125, 1.00781, 1.02344, 1.01562, 1.01562, 1.0, 1.01562, 1.0,
                    1.00781, 1.0, 1.00781, 1.0, 1.00781, 0.99609, 1.01562, 0.99219, 1.0, 0.99219, 0.98438, 0.99609,
                    0.96484, 0.96094, 0.9375, 0.93359)),
        f"{_MC}, MagCache4FLUX_Kontext/magcache_flux_kontext.py:458",
        num_steps=28,
        interleaved=False,
        threshold=0.05,
        max_skip_steps=4,
        retention_ratio=0.2,
        note="README (L20, ComfyUI, 28 steps): E005K4R02 -> ~15 s from ~30 s (2.0x).",
    ),
    "qwen-image": MagRatioPreset(
        _padded(2, (1.64062, 1.64062, 1.45312, 1.45312, 1.1875, 1.1875, 1.17188, 1.17188, 1.05469, 1.05469, 1.21094,
                    1.21094, 1.10938, 1.10938, 1.11719, 1.11719, 1.13281, 1.13281, 1.11719, 1.11719, 1.07812, 1.07812,
                    1.07031, 1.07031, 1.08594, 1.08594, 1.08594, 1.08594, 1.07812, 1.07812, 1.03906, 1.03906, 1.04688,
                    1.04688, 1.07812, 1.07812, 1.07031, 1.07031, 1.03125, 1.03125, 1.07812, 1.07812, 1.04688, 1.04688,
                    1.04688, 1.04688, 1.04688, 1.04688, 1.03906, 1.03906, 1.01562, 1.01562, 1.03125, 1.03125, 1.02344,
                    1.02344, 1.02344, 1.02344, 1.02344, 1.02344, 1.03906, 1.03906, 1.0, 1.0, 1.01562, 1.01562, 1.0,
                    1.0, 0.99219, 0.99219, 1.00781, 1.00781, 0.98047, 0.98047, 0.95703, 0.95703, 0.96875, 0.96875,
                    0.99219, 0.99219, 0.92578, 0.92578, 0.92578, 0.92578, 0.90625, 0.90625, 0.85938, 0.85938, 0.80469,
                    0.80469, 0.87891, 0.87891, 0.75, 0.75, 0.60938, 0.60938, 0.55078, 0.55078)),
        f"{_MC}, MagCache4QwenImage/magcache_generate.py:275 (padding added in init_magcache)",
        num_steps=50,
        interleaved=True,
        threshold=0.06,
        max_skip_steps=2,
        retention_ratio=0.2,
        note="True-CFG. README (A800): E006K2R02 -> ~50 s from ~75 s (1.5x).",
    ),
    "qwen-image-edit": MagRatioPreset(
        _padded(2, (1.41406, 1.41406, 1.09375, 1.09375, 1.3125, 1.3125, 1.20312, 1.20312, 1.0625, 1.0625, 1.125,
                    1.125, 1.14062, 1.14062, 1.17969, 1.17969, 1.09375, 1.09375, 1.10938, 1.10938, 1.10938, 1.10938,
                    1.07031, 1.07031, 1.04688, 1.04688, 1.09375, 1.09375, 1.03906, 1.03906, 1.0625, 1.0625, 1.04688,
                    1.04688, 1.0625, 1.0625, 1.04688, 1.04688, 1.07031, 1.0625, 1.03125, 1.03125, 1.03906, 1.03906,
                    1.03906, 1.03906, 1.02344, 1.02344, 1.01562, 1.01562, 1.03125, 1.03125, 1.00781, 1.00781, 1.01562,
                    1.01562, 1.00781, 1.00781, 1.01562, 1.01562, 1.0, 1.0, 1.0, 1.0, 0.98828, 0.98828, 0.98047,
                    0.98047, 0.98047, 0.98047, 0.97266, 0.97266, 0.92578, 0.92578, 0.94922, 0.94922, 0.98438, 0.98438,
                    0.89844, 0.89844, 0.91797, 0.91797, 0.92188, 0.92188, 0.84375, 0.84375, 0.82812, 0.82812, 0.78516,
                    0.78516, 0.87891, 0.87891, 0.71094, 0.71094, 0.56641, 0.56641, 0.50781, 0.50781)),
        f"{_MC}, MagCache4QwenImageEdit/magcache_generate.py:271 (padding added in init_magcache)",
        num_steps=50,
        interleaved=True,
        threshold=0.06,
        max_skip_steps=2,
        retention_ratio=0.2,
        note="True-CFG. README (A800): E006K2R02 -> ~80 s from ~120 s (1.5x).",
    ),
    "wan2.1-t2v-1.3b": MagRatioPreset(
        _padded(2, (1.0124, 1.02213, 1.00166, 1.0041, 0.99791, 1.00061, 0.99682, 0.99762, 0.99634, 0.99685, 0.99567,
                    0.99586, 0.99416, 0.99422, 0.99578, 0.99575, 0.9957, 0.99563, 0.99511, 0.99506, 0.99535, 0.99531,
                    0.99552, 0.99549, 0.99541, 0.99539, 0.9954, 0.99536, 0.99489, 0.99485, 0.99518, 0.99514, 0.99484,
                    0.99478, 0.99481, 0.99479, 0.99415, 0.99413, 0.99419, 0.99416, 0.99396, 0.99393, 0.99388, 0.99386,
                    0.99349, 0.99349, 0.99309, 0.99304, 0.9927, 0.9927, 0.99228, 0.99226, 0.99171, 0.9917, 0.99137,
                    0.99135, 0.99068, 0.99063, 0.99005, 0.99003, 0.98944, 0.98942, 0.98849, 0.98849, 0.98758, 0.98757,
                    0.98644, 0.98643, 0.98504, 0.98503, 0.9836, 0.98359, 0.98202, 0.98201, 0.97977, 0.97978, 0.97717,
                    0.97718, 0.9741, 0.97411, 0.97003, 0.97002, 0.96538, 0.96541, 0.9593, 0.95933, 0.95086, 0.95089,
                    0.94013, 0.94019, 0.92402, 0.92414, 0.90241, 0.9026, 0.86821, 0.86868, 0.81838, 0.81939)),
        f"{_WAN21}:912",
        num_steps=50,
        interleaved=True,
        threshold=0.12,
        max_skip_steps=4,
        retention_ratio=0.2,
        note="README command K=4, R=0.2, E=0.12; paper: 187.21 s -> 69.75 s (2.68x, A800). Script defaults E=0.12, "
        "K=2, R=0.2.",
    ),
    "wan2.1-t2v-14b": MagRatioPreset(
        _padded(2, (1.02504, 1.03017, 1.00025, 1.00251, 0.9985, 0.99962, 0.99779, 0.99771, 0.9966, 0.99658, 0.99482,
                    0.99476, 0.99467, 0.99451, 0.99664, 0.99656, 0.99434, 0.99431, 0.99533, 0.99545, 0.99468, 0.99465,
                    0.99438, 0.99434, 0.99516, 0.99517, 0.99384, 0.9938, 0.99404, 0.99401, 0.99517, 0.99516, 0.99409,
                    0.99408, 0.99428, 0.99426, 0.99347, 0.99343, 0.99418, 0.99416, 0.99271, 0.99269, 0.99313, 0.99311,
                    0.99215, 0.99215, 0.99218, 0.99215, 0.99216, 0.99217, 0.99163, 0.99161, 0.99138, 0.99135, 0.98982,
                    0.9898, 0.98996, 0.98995, 0.9887, 0.98866, 0.98772, 0.9877, 0.98767, 0.98765, 0.98573, 0.9857,
                    0.98501, 0.98498, 0.9838, 0.98376, 0.98177, 0.98173, 0.98037, 0.98035, 0.97678, 0.97677, 0.97546,
                    0.97543, 0.97184, 0.97183, 0.96711, 0.96708, 0.96349, 0.96345, 0.95629, 0.95625, 0.94926, 0.94929,
                    0.93964, 0.93961, 0.92511, 0.92504, 0.90693, 0.90678, 0.8796, 0.87945, 0.86111, 0.86189)),
        f"{_WAN21}:910",
        num_steps=50,
        interleaved=True,
        threshold=0.24,
        max_skip_steps=6,
        retention_ratio=0.2,
        note="Also used by the authors for VACE-14B. README (720p, A800): E024K6R02 ~60 min -> ~21 min 40 s.",
    ),
    "wan2.1-i2v-14b-480p": MagRatioPreset(
        _padded(2, (0.98783, 0.98993, 0.97559, 0.97593, 0.98311, 0.98319, 0.98202, 0.98225, 0.9888, 0.98878, 0.98762,
                    0.98759, 0.98957, 0.98971, 0.99052, 0.99043, 0.99383, 0.99384, 0.98857, 0.9886, 0.99065, 0.99068,
                    0.98845, 0.98847, 0.99057, 0.99057, 0.98957, 0.98961, 0.98601, 0.9861, 0.98823, 0.98823, 0.98756,
                    0.98759, 0.98808, 0.98814, 0.98721, 0.98724, 0.98571, 0.98572, 0.98543, 0.98544, 0.98157, 0.98165,
                    0.98411, 0.98413, 0.97952, 0.97953, 0.98149, 0.9815, 0.9774, 0.97742, 0.97825, 0.97826, 0.97355,
                    0.97361, 0.97085, 0.97087, 0.97056, 0.97055, 0.96588, 0.96587, 0.96113, 0.96124, 0.9567, 0.95681,
                    0.94961, 0.94969, 0.93973, 0.93988, 0.93217, 0.93224, 0.91878, 0.91896, 0.90955, 0.90954, 0.92617,
                    0.92616)),
        f"{_WAN21}:1002",
        num_steps=40,
        interleaved=True,
        threshold=0.24,
        max_skip_steps=6,
        retention_ratio=0.2,
    ),
    "wan2.1-i2v-14b-720p": MagRatioPreset(
        _padded(2, (0.99428, 0.99498, 0.98588, 0.98621, 0.98273, 0.98281, 0.99018, 0.99023, 0.98911, 0.98917, 0.98646,
                    0.98652, 0.99454, 0.99456, 0.9891, 0.98909, 0.99124, 0.99127, 0.99102, 0.99103, 0.99215, 0.99212,
                    0.99515, 0.99515, 0.99576, 0.99572, 0.99068, 0.99072, 0.99097, 0.99097, 0.99166, 0.99169, 0.99041,
                    0.99042, 0.99201, 0.99198, 0.99101, 0.99101, 0.98599, 0.98603, 0.98845, 0.98844, 0.98848, 0.98851,
                    0.98862, 0.98857, 0.98718, 0.98719, 0.98497, 0.98497, 0.98264, 0.98263, 0.98389, 0.98393, 0.97938,
                    0.9794, 0.97535, 0.97536, 0.97498, 0.97499, 0.973, 0.97301, 0.96827, 0.96828, 0.96261, 0.96263,
                    0.95335, 0.9534, 0.94649, 0.94655, 0.93397, 0.93414, 0.91636, 0.9165, 0.89088, 0.89109, 0.8679,
                    0.86768)),
        f"{_WAN21}:1004",
        num_steps=40,
        interleaved=True,
        threshold=0.24,
        max_skip_steps=6,
        retention_ratio=0.2,
        note="README: 720P with frame_num 61.",
    ),
    "wan2.2-t2v-a14b": MagRatioPreset(
        _padded(2, (1.00124, 1.00155, 0.99822, 0.99851, 0.99696, 0.99687, 0.99703, 0.99732, 0.9966, 0.99679, 0.99602,
                    0.99658, 0.99578, 0.99664, 0.99484, 0.9949, 0.99633, 0.996, 0.99659, 0.99683, 0.99534, 0.99549,
                    0.99584, 0.99577, 0.99681, 0.99694, 0.99563, 0.99554, 0.9944, 0.99473, 0.99594, 0.9964, 0.99466,
                    0.99461, 0.99453, 0.99481, 0.99389, 0.99365, 0.99391, 0.99406, 0.99354, 0.99361, 0.99283, 0.99278,
                    0.99268, 0.99263, 0.99057, 0.99091, 0.99125, 0.99126, 0.65523, 0.65252, 0.98808, 0.98852, 0.98765,
                    0.98736, 0.9851, 0.98535, 0.98311, 0.98339, 0.9805, 0.9806, 0.97776, 0.97771, 0.97278, 0.97286,
                    0.96731, 0.96728, 0.95857, 0.95855, 0.94385, 0.94385, 0.92118, 0.921, 0.88108, 0.88076, 0.80263,
                    0.80181)),
        f"{_WAN22}:695 (padding added in init_magcache)",
        num_steps=40,
        interleaved=True,
        threshold=0.06,
        max_skip_steps=2,
        retention_ratio=0.4,
        note=(
            "One curve over BOTH experts of the MoE (the 0.655 entry is the expert switch); the authors keep one "
            "step counter across the two transformers. Applied to one expert alone, the step index is wrong."
        ),
    ),
    "wan2.2-i2v-a14b": MagRatioPreset(
        _padded(2, (0.99191, 0.99144, 0.99356, 0.99337, 0.99326, 0.99285, 0.99251, 0.99264, 0.99393, 0.99366, 0.9943,
                    0.9943, 0.99276, 0.99288, 0.99389, 0.99393, 0.99274, 0.99289, 0.99316, 0.9931, 0.99379, 0.99377,
                    0.99268, 0.99271, 0.99222, 0.99227, 0.99175, 0.9916, 0.91076, 0.91046, 0.98931, 0.98933, 0.99087,
                    0.99088, 0.98852, 0.98855, 0.98895, 0.98896, 0.98806, 0.98808, 0.9871, 0.98711, 0.98613, 0.98618,
                    0.98434, 0.98435, 0.983, 0.98307, 0.98185, 0.98187, 0.98131, 0.98131, 0.9783, 0.97835, 0.97619,
                    0.9762, 0.97264, 0.9727, 0.97088, 0.97098, 0.96568, 0.9658, 0.96045, 0.96055, 0.95322, 0.95335,
                    0.94579, 0.94594, 0.93297, 0.93311, 0.91699, 0.9172, 0.89174, 0.89202, 0.8541, 0.85446, 0.79823,
                    0.79902)),
        f"{_WAN22}:771 (padding added in init_magcache)",
        num_steps=40,
        interleaved=True,
        threshold=0.06,
        max_skip_steps=2,
        retention_ratio=0.1,
        note="One curve over BOTH experts of the MoE (the 0.911 entry is the expert switch), as wan2.2-t2v-a14b.",
    ),
    "wan2.2-ti2v-5b": MagRatioPreset(
        _padded(2, (0.99505, 0.99389, 0.99441, 0.9957, 0.99558, 0.99551, 0.99499, 0.9945, 0.99534, 0.99548, 0.99468,
                    0.9946, 0.99463, 0.99458, 0.9946, 0.99453, 0.99408, 0.99404, 0.9945, 0.99441, 0.99409, 0.99398,
                    0.99403, 0.99397, 0.99382, 0.99377, 0.99349, 0.99343, 0.99377, 0.99378, 0.9933, 0.99328, 0.99303,
                    0.99301, 0.99217, 0.99216, 0.992, 0.99201, 0.99201, 0.99202, 0.99133, 0.99132, 0.99112, 0.9911,
                    0.99155, 0.99155, 0.98958, 0.98957, 0.98959, 0.98958, 0.98838, 0.98835, 0.98826, 0.98825, 0.9883,
                    0.98828, 0.98711, 0.98709, 0.98562, 0.98561, 0.98511, 0.9851, 0.98414, 0.98412, 0.98284, 0.98282,
                    0.98104, 0.98101, 0.97981, 0.97979, 0.97849, 0.97849, 0.97557, 0.97554, 0.97398, 0.97395, 0.97171,
                    0.97166, 0.96917, 0.96913, 0.96511, 0.96507, 0.96263, 0.96257, 0.95839, 0.95835, 0.95483, 0.95475,
                    0.94942, 0.94936, 0.9468, 0.94678, 0.94583, 0.94594, 0.94843, 0.94872, 0.96949, 0.97015)),
        f"{_WAN22}:736, text-to-video (padding added in init_magcache)",
        num_steps=50,
        interleaved=True,
        threshold=0.06,
        max_skip_steps=2,
        retention_ratio=0.2,
        note="README (720p, L20): E006K2R02 ~10 min 39 s -> ~5 min 24 s.",
    ),
    "wan2.2-ti2v-5b-i2v": MagRatioPreset(
        _padded(2, (0.99512, 0.99559, 0.99559, 0.99561, 0.99595, 0.99577, 0.99512, 0.99512, 0.99546, 0.99534, 0.99543,
                    0.99531, 0.99496, 0.99491, 0.99504, 0.99499, 0.99444, 0.99449, 0.99481, 0.99481, 0.99435, 0.99435,
                    0.9943, 0.99431, 0.99411, 0.99406, 0.99373, 0.99376, 0.99413, 0.99405, 0.99363, 0.99359, 0.99335,
                    0.99331, 0.99244, 0.99243, 0.99229, 0.99229, 0.99239, 0.99236, 0.99163, 0.9916, 0.99149, 0.99151,
                    0.99191, 0.99192, 0.9898, 0.98981, 0.9899, 0.98987, 0.98849, 0.98849, 0.98846, 0.98846, 0.98861,
                    0.98861, 0.9874, 0.98738, 0.98588, 0.98589, 0.98539, 0.98534, 0.98444, 0.98439, 0.9831, 0.98309,
                    0.98119, 0.98118, 0.98001, 0.98, 0.97862, 0.97859, 0.97555, 0.97558, 0.97392, 0.97388, 0.97152,
                    0.97145, 0.96871, 0.9687, 0.96435, 0.96434, 0.96129, 0.96127, 0.95639, 0.95638, 0.95176, 0.95175,
                    0.94446, 0.94452, 0.93972, 0.93974, 0.93575, 0.9359, 0.93537, 0.93552, 0.96655, 0.96616)),
        f"{_WAN22}:738, image-to-video (padding added in init_magcache)",
        num_steps=50,
        interleaved=True,
        threshold=0.06,
        max_skip_steps=2,
        retention_ratio=0.2,
    ),
    "hunyuanvideo-720p": MagRatioPreset(
        _padded(1, (1.0754, 1.27807, 1.11596, 1.09504, 1.05188, 1.00844, 1.05779, 1.00657, 1.04142, 1.03101, 1.00679,
                    1.02556, 1.00908, 1.06949, 1.05438, 1.02214, 1.02321, 1.03019, 1.00779, 1.03381, 1.01886, 1.01161,
                    1.02968, 1.00544, 1.02822, 1.00689, 1.02119, 1.0105, 1.01044, 1.01572, 1.02972, 1.0094, 1.02368,
                    1.0226, 0.98965, 1.01588, 1.02146, 1.0018, 1.01687, 0.99436, 1.00283, 1.01139, 0.97122, 0.98251,
                    0.94513, 0.97656, 0.90943, 0.85703, 0.75456)),
        f"{_HUNYUAN}:316",
        num_steps=50,
        interleaved=False,
        threshold=0.24,
        max_skip_steps=6,
        retention_ratio=0.2,
        note="No CFG (guidance-distilled). README (A800): 720p 54 min 05 s -> E024K06R02 19 min 33 s; alt E012K04R02.",
    ),
    "hunyuanvideo-544p": MagRatioPreset(
        _padded(1, (1.06971, 1.29073, 1.11245, 1.09596, 1.05233, 1.01415, 1.05672, 1.00848, 1.03632, 1.02974, 1.00984,
                    1.03028, 1.00681, 1.06614, 1.05022, 1.02592, 1.01776, 1.02985, 1.00726, 1.03727, 1.01502, 1.00992,
                    1.03371, 0.9976, 1.02742, 1.0093, 1.01869, 1.00815, 1.01461, 1.01152, 1.03082, 1.0061, 1.02162,
                    1.01999, 0.99063, 1.01186, 1.0217, 0.99947, 1.01711, 0.9904, 1.00258, 1.00878, 0.97039, 0.97686,
                    0.94315, 0.97728, 0.91154, 0.86139, 0.76592)),
        f"{_HUNYUAN}:318",
        num_steps=50,
        interleaved=False,
        threshold=0.24,
        max_skip_steps=6,
        retention_ratio=0.2,
        note="No CFG (guidance-distilled). README (A800): 540p 20 min 10 s -> E024K06R02 7 min 17 s.",
    ),
    "framepack": MagRatioPreset(
        _padded(1, (1.26562, 1.23438, 1.03125, 1.02344, 1.03906, 1.01562, 1.03906, 1.05469, 1.02344, 1.03906,
                    0.99609, 1.03125, 1.02344, 1.01562, 1.02344, 1.00781, 1.04688, 0.98828, 1.0, 1.00781, 0.98828,
                    0.94141, 0.94141, 0.78906)),
        f"{_MC}, MagCache4FramePack/magcache_demo_gradio.py:70",
        num_steps=25,
        interleaved=False,
        threshold=0.10,
        max_skip_steps=3,
        retention_ratio=0.2,
        note="Per 25-step section, no CFG (distilled guidance). README (L20, 5 s video): E010K3R02 9 min -> 4 min "
        "20 s; E015K4R02 -> 4 min.",
    ),
    "framepack-f1": MagRatioPreset(
        _padded(1, (1.25781, 1.08594, 1.02344, 1.00781, 1.02344, 1.00781, 1.02344, 1.05469, 0.99609, 1.03906,
                    1.00781, 1.01562, 1.00781, 1.02344, 1.01562, 0.98047, 1.05469, 0.98047, 0.96875, 1.03125,
                    0.97266, 0.9375, 0.96484, 0.78516)),
        f"{_MC}, MagCache4FramePack/magcache_demo_gradio_f1.py:70",
        num_steps=25,
        interleaved=False,
        threshold=0.10,
        max_skip_steps=3,
        retention_ratio=0.2,
        note="Per 25-step section, no CFG (distilled guidance). README (L20, 5 s video): E010K3R02 9 min -> 4 min "
        "20 s; E015K4R02 -> 3 min 40 s.",
    ),
}
# fmt: on
MAG_RATIO_PRESETS.update(MORE_MAG_RATIO_PRESETS)


def infer_magcache_model(module: Any) -> tuple[str, bool]:
    """The preset key for a module from its class and config: ``(key, exact)``.

    The rule is the one the model's file declares (:mod:`ditcache.presets.rules`). ``exact`` is False when the
    architecture matches no published checkpoint and the nearest curve of the same family is borrowed (a
    random-weight test model, say); callers log that. FLUX.1-Kontext and FLUX.1-dev share a class and a config, so
    a Flux model always maps to ``"flux.1-dev"`` (pass ``model="flux.1-kontext-dev"``). Raises ValueError when the
    family has no published curve.
    """
    try:
        return preset_key(module, "magcache")
    except NoPresetError as exc:
        known = "known" if exc.note is None else f"published ({exc.note})"
        raise ValueError(
            f"model: no published MagCache ratios are {known} for {exc.class_name}; pass MagCacheConfig(model=...) "
            f"with one of {sorted(MAG_RATIO_PRESETS)}, explicit mag_ratios=[...], or a calibrated profile=... "
            "(calibrate one with MagCacheConfig(calibrate=True))"
        ) from None
