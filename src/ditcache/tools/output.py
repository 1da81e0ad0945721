"""What the commands show and write, shared by ``demo``, ``bench`` and ``calibrate``: the output-directory check,
the progress bar, result tables and number formats."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

__all__ = ["check_output_dir", "fmt_psnr", "progress_bar", "result_table"]


def check_output_dir(path: Path) -> str | None:
    """Create ``path`` if needed and check that files can be written in it; None if fine, else the problem."""
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the directory {path}: {exc.strerror or exc}"
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".ditcache-write-test-"):
            pass
    except OSError as exc:
        return f"cannot write in the directory {path}: {exc.strerror or exc}"
    return None


def fmt_psnr(value: float, unit: str = "") -> str:
    """A PSNR for a table: ``"identical"`` when infinite, else one decimal followed by ``unit``."""
    return "identical" if math.isinf(value) else f"{value:.1f}{unit}"


def result_table(title: str, columns: Sequence[str], *, fold: bool = False) -> Table:
    """A rich table titled ``title`` (left-aligned) with ``columns``; ``fold`` wraps long cells instead of
    cutting them."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold" if fold else "ellipsis")
    return table


@contextmanager
def progress_bar(console: Console, first: str, width: int = 70) -> Iterator[Callable[[str, int], None]]:
    """A transient progress bar on ``console`` showing ``first`` until the first update; yields
    ``progress(description, total)``, which advances it by one unit (descriptions cut to ``width``). Lines printed
    on ``console`` meanwhile appear above the bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(first, total=None)

        def progress(description: str, total: int) -> None:
            bar.update(task, total=total, advance=1, description=description[:width])

        yield progress
