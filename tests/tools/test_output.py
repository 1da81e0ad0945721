"""``ditcache.tools.output``: the output-directory check, PSNR formatting, result tables and the progress bar."""

from __future__ import annotations

import io
import math
from pathlib import Path

from rich.console import Console

from ditcache.tools.output import check_output_dir, fmt_psnr, progress_bar, result_table


def test_check_output_dir_creates_or_names_the_problem(tmp_path: Path) -> None:
    assert check_output_dir(tmp_path / "a" / "b") is None and (tmp_path / "a" / "b").is_dir()
    assert not any((tmp_path / "a" / "b").iterdir())  # the write test leaves nothing behind
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert check_output_dir(blocker) == f"{blocker} exists and is not a directory"
    problem = check_output_dir(blocker / "sub")
    assert problem is not None and problem.startswith(f"cannot create the directory {blocker / 'sub'}")


def test_fmt_psnr_and_result_table() -> None:
    assert fmt_psnr(math.inf) == "identical" and fmt_psnr(math.inf, " dB") == "identical"
    assert fmt_psnr(41.26) == "41.3" and fmt_psnr(41.26, " dB") == "41.3 dB"
    table = result_table("title", ("a", "b"), fold=True)
    assert [c.header for c in table.columns] == ["a", "b"] and table.columns[0].overflow == "fold"
    assert result_table("t", ("a",)).columns[0].overflow == "ellipsis"


def test_progress_bar_takes_updates_and_lets_lines_through() -> None:
    stream = io.StringIO()
    console = Console(file=stream, width=100, force_terminal=False)
    with progress_bar(console, "first", width=5) as progress:
        progress("a long description", 2)
        progress("second", 2)
        console.print("a line above the bar")
    assert "a line above the bar" in stream.getvalue()
