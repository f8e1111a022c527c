"""Rich progress for long stages. Components call ``ctx.progress.track(...)`` or ``ctx.progress.task(...)``."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, SpinnerColumn, TextColumn
from rich.progress import TimeElapsedColumn, TimeRemainingColumn


class Progress:
    def __init__(self, console: Console | None = None, disable: bool = False):
        self.console = console or Console(stderr=True)
        self._bar = RichProgress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=disable,
            transient=False,
        )

    def __enter__(self):
        self._bar.start()
        return self

    def __exit__(self, *exc):
        self._bar.stop()

    @contextmanager
    def task(self, description: str, total: float | None):
        """Yield ``advance(n=1, info="")``; the bar is removed from live view when done."""
        tid = self._bar.add_task(description, total=total, info="")

        def advance(n: float = 1, info: str | None = None):
            self._bar.update(tid, advance=n, **({"info": info} if info is not None else {}))

        try:
            yield advance
        finally:
            self._bar.update(tid, completed=self._bar.tasks[self._bar.task_ids.index(tid)].total or 0)

    def track(self, iterable, description: str, total: int | None = None):
        with self.task(description, total if total is not None else len(iterable)) as advance:
            for item in iterable:
                yield item
                advance()

    def log(self, *args, **kw):
        self.console.log(*args, **kw)

    def warn(self, text: str):
        """One line, however long: a warning is read, and grepped for, whole."""
        self.console.print(f"[yellow]warning:[/] {escape(text)}", soft_wrap=True)
