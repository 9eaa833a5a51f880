"""Terminal output: tables in three formats, and progress for apply (bars on a terminal, lines elsewhere)."""

from __future__ import annotations

import csv
import json
import sys
from datetime import date, datetime
from decimal import Decimal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

def _console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    # off a terminal (pipes, CI logs) rich assumes 80 columns; tables read better unwrapped
    return Console(stderr=stderr, soft_wrap=True, markup=False, highlight=False, width=None if probe.is_terminal else 240)


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
        sys.stdout.write(json.dumps([{c: _jsonable(v) for c, v in zip(columns, row)} for row in rows], indent=2, default=str) + "\n")
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


class ApplyProgress:
    """Progress of an apply: a bar for runs and one for the current run's steps (plain lines off a terminal)."""

    def __init__(self, total_runs: int):
        self.live = err.is_terminal
        self.total = total_runs
        self.done = 0
        if self.live:
            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=False,
            )
            self.runs_task = self.bar.add_task("runs", total=total_runs)
            self.step_task = None

    def __enter__(self):
        if self.live:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.bar.__exit__(*exc)
        return False

    def run_started(self, run, required: bool = False, action: str = "training") -> None:
        """``required``: a run another run needs first (a transfer source, a teacher), outside the count."""
        label = f"{run.experiment}: {run.label()}" if required else run.label()
        if self.live:
            if self.step_task is not None:
                self.bar.remove_task(self.step_task)
            self.step_task = self.bar.add_task(f"  {run.run_id} {label}", total=None)
        else:
            prefix = "required first" if required else f"{self.done + 1}/{self.total}"
            err.print(f"[{prefix}] {run.run_id} {label}: {action}", markup=False, highlight=False)

    def step(self, step: int, total: int) -> None:
        if self.live and self.step_task is not None:
            self.bar.update(self.step_task, completed=step, total=total)

    def dependency_done(self, outcome) -> None:
        self._report(outcome, prefix="required first", experiment=True)

    def run_done(self, outcome) -> None:
        self.done += 1
        self._report(outcome, prefix=f"{self.done}/{self.total}")
        if self.live:
            self.bar.update(self.runs_task, advance=1)

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
        }.get(outcome.status, outcome.status)
        line = f"[{prefix}] {run.run_id} {label}: {text}"
        if self.live:
            self.bar.console.print(line, markup=False, highlight=False)
        else:
            err.print(line, markup=False, highlight=False)


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
