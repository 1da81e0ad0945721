"""The package's shape: what ``import ditcache`` loads, the layering contract, the lazy model table, the top level.

Each check runs in a fresh interpreter, since this test process has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ditcache

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], check=True, capture_output=True, text=True
    ).stdout


def test_import_ditcache_loads_no_tool_and_no_heavy_dependency() -> None:
    out = _run(
        """
        import json, sys
        import torch
        before = set(sys.modules)
        import ditcache
        print(json.dumps(sorted(set(sys.modules) - before)))
        """
    )
    added = json.loads(out)
    roots = {name.split(".")[0] for name in added}
    for forbidden in (
        "argparse",
        "rich",
        "matplotlib",
        "cache_dit",
        "diffusers",
        "structlog",
        "numpy",
        "torch._dynamo",
    ):
        assert not any(m == forbidden or m.startswith(forbidden + ".") for m in added), forbidden
    assert not [m for m in added if m.startswith(("ditcache.tools", "ditcache.models.", "ditcache.calibration"))]
    assert "ditcache" in roots


def test_model_modules_load_on_first_lookup_only() -> None:
    out = _run(
        """
        import json, sys
        import ditcache
        from ditcache.core import get_extractor
        loaded = lambda: sorted(m for m in sys.modules if m.startswith("ditcache.models."))
        first = loaded()
        ext = get_extractor("QwenImageTransformer2DModel")
        print(json.dumps([first, loaded(), ext.name]))
        """
    )
    first, after, name = json.loads(out)
    assert first == []
    assert "ditcache.models.families.qwenimage" in after and "ditcache.models.families.flux" not in after
    assert name == "qwenimage"


def test_first_lookups_from_many_threads_all_succeed() -> None:
    out = _run(
        """
        import json, threading
        import ditcache
        from ditcache.core import get_extractor
        barrier = threading.Barrier(8)
        results = []
        def look(name):
            barrier.wait()
            try:
                results.append(get_extractor(name).name)
            except Exception as exc:
                results.append(repr(exc))
        names = ["FluxTransformer2DModel", "QwenImageTransformer2DModel", "WanTransformer3DModel"] * 3
        threads = [threading.Thread(target=look, args=(n,)) for n in names[:8]]
        for t in threads: t.start()
        for t in threads: t.join()
        print(json.dumps(sorted(results)))
        """
    )
    expected = {
        "FluxTransformer2DModel": "flux",
        "QwenImageTransformer2DModel": "qwenimage",
        "WanTransformer3DModel": "wan",
    }
    names = ["FluxTransformer2DModel", "QwenImageTransformer2DModel", "WanTransformer3DModel"] * 3
    assert json.loads(out) == sorted(expected[n] for n in names[:8])


def test_layering_contract_is_kept() -> None:
    """import-linter's contracts in pyproject.toml (layers, model independence, nothing imports tools) all hold."""
    pytest.importorskip("importlinter")
    code = (
        "from importlinter.cli import lint_imports; "
        f"raise SystemExit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "KEPT" in proc.stdout and "BROKEN" not in proc.stdout


def test_top_level_is_the_first_hour_surface() -> None:
    public = set(ditcache.__all__)
    assert len(public) <= 30
    for name in ("apply_teacache_hook", "apply_magcache_hook", "apply_dbcache_hook", "remove_cache", "refresh"):
        assert name in public and callable(getattr(ditcache, name))
    with pytest.raises(AttributeError, match=r"import it from ditcache\.core"):
        _ = ditcache.HookRegistry
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = ditcache.nope


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    assert ditcache.__version__ == version("ditcache")


def test_compiled_module_is_looked_up_as_its_original_class() -> None:
    import torch
    from diffusers import FluxTransformer2DModel

    from ditcache.core import get_extractor

    model = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=8, pooled_projection_dim=8, axes_dims_rope=(2, 2, 4),
    )  # fmt: skip
    compiled = torch.compile(model, backend="eager")
    assert type(compiled).__name__ == "OptimizedModule"
    assert get_extractor(compiled) is get_extractor(model)
