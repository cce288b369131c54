"""What `ingest` tells the user while it runs: the format chosen per file and a progress bar for long inputs."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from specdiag.ingest_read import STDIN, Source
from specdiag.output import err_console

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

BAR_BYTES = 16 * 1024 * 1024  # inputs smaller than this in total get no bar
MAX_FILE_LINES = 20  # above this many files, per-file format lines are left to the summary


class ProgressDisplay:
    """A rich progress bar over all inputs' on-disk bytes (stderr), shown only when the inputs are long."""

    def __init__(self, files: list[str], enabled: bool = True) -> None:
        sizes = [0 if f == STDIN else Path(f).stat().st_size for f in files]
        self.total = sum(sizes)
        self.verbose = enabled and len(files) <= MAX_FILE_LINES
        self.progress: Progress | None = None
        if enabled and (self.total >= BAR_BYTES or STDIN in files):
            # imported only when a bar is shown (about 0.1 s)
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("ingest"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            )
        self.task: TaskID | None = None
        self.done = 0  # bytes of the files finished
        self.current = 0

    def __enter__(self) -> ProgressDisplay:
        if self.progress is not None:
            self.progress.start()
            self.task = self.progress.add_task("ingest", total=self.total or None)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def start(self, source: Source) -> None:
        self.current = 0

    def advance(self, read_bytes: int) -> None:
        self.current = read_bytes
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=self.done + read_bytes)

    def chose_format(self, label: str, name: str) -> None:
        if self.verbose:
            console = self.progress.console if self.progress is not None else err_console
            console.print(f"{label}: format {name}", highlight=False, markup=False, soft_wrap=True)

    def finish(self, stats: object) -> None:
        self.done += self.current
