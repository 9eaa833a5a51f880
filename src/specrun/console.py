"""Terminal output: tables in three formats, and progress for apply (bars on a terminal, lines elsewhere)."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from specrun.errors import UsageError


def _console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    # off a terminal (pipes, CI logs) rich assumes 80 columns; tables read better unwrapped
    return Console(
        stderr=stderr, soft_wrap=True, markup=False, highlight=False, width=None if probe.is_terminal else 240
    )


out = _console()
err = _console(stderr=True)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _jsonable(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def print_rows(columns: list[str], rows: list[tuple], fmt: str = "table", title: str | None = None) -> None:
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_jsonable(v) for v in row] for row in rows])
    elif fmt == "json":
        sys.stdout.write(
            json.dumps(
                [{c: _jsonable(v) for c, v in zip(columns, row)} for row in rows],
                indent=2,
                default=str,
                ensure_ascii=False,  # texts as they are written, like csv and the table
            )
            + "\n"
        )
    elif fmt == "markdown":  # a GitHub table to paste into a paper's notes or a README

        def md(value) -> str:
            return _cell(value).replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(md(c) for c in columns) + " |", "|" + " --- |" * len(columns)]
        lines += ["| " + " | ".join(md(v) for v in row) + " |" for row in rows]
        sys.stdout.write("\n".join(lines) + "\n")
    else:
        table = Table(title=title, show_lines=False)
        for c in columns:
            table.add_column(c, overflow="fold")
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        out.print(table)


#: Seconds between progress lines when the error stream is not a terminal (0: a line at every step and phase).
PROGRESS_EVERY_ENV = "SPECRUN_PROGRESS_EVERY"
DEFAULT_PROGRESS_EVERY = 30.0
#: Seconds between refreshes of the loss, learning rate, rate and ETA shown on a terminal.
LIVE_STATS_EVERY = 0.5


def progress_every() -> float:
    """``SPECRUN_PROGRESS_EVERY`` in seconds (default 30); a UsageError if it is not a number ≥ 0."""
    raw = os.environ.get(PROGRESS_EVERY_ENV, "").strip()
    if not raw:
        return DEFAULT_PROGRESS_EVERY
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"{PROGRESS_EVERY_ENV} must be a number of seconds (0 or more), not {raw!r}")
    return value


def duration(seconds: float) -> str:
    """``45s``, ``2m05s``, ``3h07m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class _RunState:
    """What the progress display knows of the run in progress."""

    prefix: str
    title: str  # run id and label
    phase: str
    phase_since: float
    step: int = 0
    total: int | None = None
    report: object = None  # the latest ``runner.train.StepReport``
    last_report_at: float = 0.0
    base: tuple[float, int] | None = None  # (time, step) of the first step seen: ETA is measured from there
    loss_mark: tuple | None = None
    rate_mark: tuple[int, float] | None = None  # (samples, train seconds) when the rate was last measured
    stats: dict | None = None  # loss, lr, rate, eta as last measured
    stats_at: float = 0.0

    def measure(self, now: float) -> dict:
        """Loss (mean since the last measurement), learning rate, samples/s and ETA from the latest step
        report. Reads the loss from the device: call it only to show the result."""
        r = self.report
        loss, self.loss_mark = r.loss_since(self.loss_mark)
        rate = None
        if self.rate_mark and r.train_seconds > self.rate_mark[1] and r.samples > self.rate_mark[0]:
            rate = (r.samples - self.rate_mark[0]) / (r.train_seconds - self.rate_mark[1])
        elif r.train_seconds > 0:
            rate = r.samples / r.train_seconds
        self.rate_mark = (r.samples, r.train_seconds)
        eta = None
        if self.base and r.step > self.base[1]:
            eta = (now - self.base[0]) / (r.step - self.base[1]) * (r.total - r.step)
        self.stats, self.stats_at = {"loss": loss, "lr": r.learning_rate, "rate": rate, "eta": eta}, now
        return self.stats

    def stats_text(self, sep: str) -> str:
        s = self.stats or {}
        parts = []
        if s.get("loss") is not None:
            parts.append(f"loss {s['loss']:.4f}")
        if s.get("lr") is not None:
            parts.append(f"lr {s['lr']:.3g}")
        if s.get("rate") is not None:
            parts.append(f"{s['rate']:.1f} samples/s")
        if s.get("eta") is not None and self.step < (self.total or 0):
            parts.append(f"ETA {duration(s['eta'])}")
        return sep.join(parts)

    def line(self, now: float) -> str:
        """One plain progress line: run, phase, step/total, loss, lr, samples/s, ETA."""
        parts = [
            self.phase
            if self.phase == "training" or now - self.phase_since < 1
            else f"{self.phase} ({duration(now - self.phase_since)})"
        ]
        if self.total:
            parts.append(f"step {self.step}/{self.total} ({100 * self.step // self.total}%)")
        stats = self.stats_text(", ") if self.phase == "training" or self.step < (self.total or 0) else ""
        if stats:  # after the last step (final evaluations, latency, saving) they would only repeat themselves
            parts.append(stats)
        return f"[{self.prefix}] {self.title}: " + ", ".join(parts)


class ApplyProgress:
    """Progress of an apply. On a terminal: a bar for the runs and one for the current run, labelled with
    its phase (loading data, building model, training, evaluating <set>, ...), with steps, ETA, training
    loss, learning rate and samples/s. Elsewhere (a file, a pipe, CI, nohup): a line when a run starts and
    ends, and while it runs a line every ``SPECRUN_PROGRESS_EVERY`` seconds (default 30) naming its phase,
    step, loss, learning rate, samples/s and ETA. ``quiet`` (``-q``): each run's result line only."""

    def __init__(self, total_runs: int, quiet: bool = False, every: float | None = None):
        # the caller passes ``specrun.logs.is_quiet()``: the console sits below the log settings
        self.quiet = quiet
        self.live = err.is_terminal and not quiet
        self.every = progress_every() if every is None else every
        self.total = total_runs
        self.done = 0
        #: Several runs at once (``--executor ray``): no per-run bar or phases, a pool line instead.
        self.concurrent = False
        self._pool: tuple[int, int, int] | None = None
        self.current: _RunState | None = None
        self.last_line = 0.0
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if self.live:
            self.bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                TextColumn("{task.fields[count]}", markup=False),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}", markup=False),
                console=err,
                transient=False,
            )
            self.runs_task = self.bar.add_task("runs", total=total_runs, count=f"0/{total_runs}", info="")
            self.step_task = None

    def __enter__(self):
        if self.live:
            self.bar.__enter__()
        elif not self.quiet and self.every > 0:
            self._ticker = threading.Thread(target=self._tick, name="specrun-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        if self.live:
            self.bar.__exit__(*exc)
        return False

    def _tick(self) -> None:
        """Lines for phases that take long without steps (loading, evaluating, saving): the training loop
        prints its own from ``step``; this covers the silences between."""
        while not self._stop.wait(min(self.every, 1.0)):
            with self.lock:
                run, now = self.current, time.monotonic()
                if self.concurrent and self._pool is not None and now - self.last_line >= self.every:
                    self._print(self._pool_text("[pool] "), now)
                    continue
                if run is None or now - self.last_line < self.every:
                    continue
                if run.report is not None and run.phase == "training" and now - run.last_report_at < self.every:
                    continue  # steps are coming: the next one prints, with fresh numbers
                self._print(run.line(now), now)

    def _print(self, line: str, now: float) -> None:
        self.last_line = now
        err.print(line, markup=False, highlight=False)

    def run_started(self, run, required: bool = False, action: str = "training") -> None:
        """``required``: a run another run needs first (a transfer source, a teacher), outside the count."""
        label = f"{run.experiment}: {run.label()}" if required else run.label()
        prefix = "required first" if required else f"{self.done + 1}/{self.total}"
        now = time.monotonic()
        if self.concurrent:
            if not self.quiet:
                with self.lock:
                    line = f"[started] {run.run_id} {label}: {action}"
                    if self.live:
                        self.bar.console.print(line, markup=False, highlight=False)
                    else:
                        self._print(line, now)
            return
        with self.lock:
            self.current = _RunState(prefix, f"{run.run_id} {label}", "starting", now)
            if self.quiet:
                return
            if self.live:
                if self.step_task is not None:
                    self.bar.remove_task(self.step_task)
                self.step_task = self.bar.add_task(f"  {run.run_id} {label}", total=None, count="", info="")
            else:
                self._print(f"[{prefix}] {run.run_id} {label}: {action}", now)

    def phase(self, name: str) -> None:
        """The run in progress enters phase ``name``: loading data, building model, training, evaluating <set>, ..."""
        run = self.current
        if run is None or self.quiet:
            return
        now = time.monotonic()
        with self.lock:
            if run.report is not None and run.stats_at < run.last_report_at:
                run.measure(now)  # the numbers of the last steps, before the loop moves on (one read per phase)
            run.phase, run.phase_since = name, now
            if self.live:
                if self.step_task is not None:
                    self.bar.update(self.step_task, description=f"  {run.title} · {name}", info=run.stats_text(" · "))
            elif now - self.last_line >= self.every:
                self._print(run.line(now), now)

    def step(self, report) -> None:
        """A training step finished (a ``runner.train.StepReport``)."""
        run = self.current
        if run is None or self.quiet:
            return
        now = time.monotonic()
        run.report, run.step, run.total, run.last_report_at = report, report.step, report.total, now
        if run.base is None:
            run.base = (now, report.step)
        if self.live:
            fields = {}
            if now - run.stats_at >= LIVE_STATS_EVERY or report.step >= report.total:
                run.measure(now)
                fields["info"] = run.stats_text(" · ")
            if self.step_task is not None:
                self.bar.update(
                    self.step_task,
                    completed=report.step,
                    total=report.total,
                    count=f"{report.step}/{report.total}",
                    **fields,
                )
        elif now - self.last_line >= self.every:
            with self.lock:
                run.measure(now)
                self._print(run.line(now), now)

    def pool(self, queued: int, running: int, done: int) -> None:
        """Runs queued / running / done, for executors that run several at once (``--executor ray``)."""
        counts = (queued, running, done)
        if self.quiet or counts == self._pool:
            return
        self._pool = counts
        with self.lock:
            if self.live:
                self.bar.update(self.runs_task, info=self._pool_text())
            else:
                self._print(self._pool_text("[pool] "), time.monotonic())

    def _pool_text(self, prefix: str = "") -> str:
        queued, running, done = self._pool
        return f"{prefix}runs: {running} running, {queued} queued, {done} done"

    def dependency_done(self, outcome) -> None:
        self._report(outcome, prefix="required first", experiment=True)

    def run_done(self, outcome) -> None:
        self.done += 1
        self._report(outcome, prefix=f"{self.done}/{self.total}")
        if self.live:
            self.bar.update(self.runs_task, advance=1, count=f"{self.done}/{self.total}")

    def _report(self, outcome, prefix: str, experiment: bool = False) -> None:
        run = outcome.run
        label = f"{run.experiment}: {run.label()}" if experiment else run.label()
        text = {
            "completed": "done " + " ".join(f"{k}={v:.4g}" for k, v in outcome.metrics.items()),
            "cached": "cached (completed earlier)",
            "evaluated": "cached, newly evaluated " + " ".join(f"{k}={v:.4g}" for k, v in outcome.metrics.items()),
            "busy": "skipped (running in another process)",
            "failed": f"FAILED: {outcome.error}",
            "skipped": f"skipped: {outcome.error}",
            "interrupted": f"INTERRUPTED: {outcome.error}",
            "pruned": outcome.error or "pruned earlier (a search does not rerun its pruned trials)",
        }.get(outcome.status, outcome.status)
        line = f"[{prefix}] {run.run_id} {label}: {text}"
        with self.lock:
            finished, self.current = self.current, None
            if self.live:
                if self.step_task is not None and finished is not None:
                    self.bar.update(self.step_task, description=f"  {finished.title} · {outcome.status}")
                self.bar.console.print(line, markup=False, highlight=False)
            else:
                self._print(line, time.monotonic())


def analysis_line(outcome) -> str:
    """One line per analysis of an apply / analyze: what it did, over how many runs, what it wrote."""
    entry = outcome.entry
    label = entry.id if entry.id == entry.name else f"{entry.id} ({entry.name})"
    left = f", {outcome.left_out} left out" if outcome.left_out else ""
    if outcome.status == "failed":
        return f"  {label}: FAILED: {outcome.error}"
    if outcome.status == "cached":
        return f"  {label}: cached (its {outcome.runs} runs{left} have not changed)"
    rows = ", ".join(f"{table} ({n} rows)" for table, n in outcome.rows.items())
    return f"  {label}: computed over {outcome.runs} runs{left} in {outcome.seconds:.1f} s → {rows}"
