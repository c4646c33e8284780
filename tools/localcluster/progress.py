"""Readable progress for long builds: one line per step on the terminal, the raw output in a log file.

    [3/14] building traefik v3.6.12 ... done in 4m12s (total 9m40s)
    [4/14] kube-router v2.1.0 cached

A tool's go/docker output goes to the log of the run (build/logs/<what>-<set>.log, its path printed first);
when a step fails, the tail of that log is printed. Without an active run (a test calling a build function
directly) the raw output goes to stderr, as before.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TextIO

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / "build" / "logs"
TAIL_LINES = 40

HEARTBEAT_SECONDS = 120  # off a terminal (CI, a pipe): how often a long step says it is still running

_raw: TextIO | None = None  # the log of the run in progress, if any
_phase = ""  # the command the running step last started ("go build"), shown beside its elapsed time


def raw_log() -> TextIO | None:
    """Where raw tool output goes during a run (None: the caller's stderr)."""
    return _raw


def command_phase(line: str) -> str | None:
    """ "go build" of "[localcluster] $ go build -trimpath ...": the command a log line says was started."""
    marker = "] $ "
    if marker not in line:
        return None
    words = []
    for word in line.split(marker, 1)[1].split()[:3]:
        if word.startswith("-") or "/" in word:
            break
        words.append(word)
    return " ".join(words) or None


def write_raw(line: str) -> None:
    global _phase
    target = _raw or sys.stderr
    target.write(line.rstrip("\n") + "\n")
    target.flush()
    if _raw is not None and (phase := command_phase(line)):
        _phase = phase


@contextlib.contextmanager
def raw_output_to(path: Path) -> Iterator[TextIO]:
    global _raw
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = _raw
    with open(path, "w", buffering=1) as f:
        _raw = f
        try:
            yield f
        finally:
            _raw = previous


def format_duration(seconds: float) -> str:
    """12s, 1m12s, 1h02m05s: how long, at a glance."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def step_label(index: int, total: int, name: str, version: str) -> str:
    width = len(str(total))
    return f"[{index:>{width}}/{total}] {name}" + (f" {version}" if version else "")


def display_path(path: Path) -> str:
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


@dataclass(frozen=True)
class Step:
    name: str
    version: str
    cached: bool
    run: Callable[[], object]


class StepFailed(Exception):
    def __init__(self, step: Step, log_path: Path, cause: BaseException):
        super().__init__(f"{step.name} {step.version}: {cause}")
        self.step, self.log_path, self.cause = step, log_path, cause


class _Ticker:
    """The running step's elapsed time (and the command it runs): on a terminal its line, rewritten every second;
    elsewhere a line every HEARTBEAT_SECONDS."""

    def __init__(self, out: TextIO, label: str, started: float, tty: bool):
        self.out, self.label, self.started, self.tty = out, label, started, tty
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(1 if self.tty else HEARTBEAT_SECONDS):
            elapsed = format_duration(time.monotonic() - self.started)
            doing = f" ({_phase})" if _phase else ""
            if self.tty:
                self.out.write(f"\r{self.label} ... {elapsed}{doing}\033[K")
            else:
                self.out.write(f"{self.label} ... still running after {elapsed}{doing}\n")
            self.out.flush()

    def __enter__(self) -> "_Ticker":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def run_steps(title: str, steps: list[Step], log_path: Path, out: TextIO | None = None) -> list[object]:
    """Run each step (a cached one only to collect its paths), reporting progress on `out` (stderr) and sending
    raw output to `log_path`. Returns the steps' results in order; raises StepFailed after printing the tail."""
    global _phase
    out = out or sys.stderr
    tty = out.isatty()
    started = time.monotonic()
    cached = sum(s.cached for s in steps)
    out.write(f"{title}: {len(steps)} steps, {cached} cached; raw output in {display_path(log_path)}\n")
    out.flush()
    results: list[object] = []
    with raw_output_to(log_path) as raw:
        for index, step in enumerate(steps, 1):
            label = step_label(index, len(steps), step.name, step.version)
            if step.cached:
                raw.write(f"==> {label}: cached\n")
                results.append(step.run())
                out.write(f"{label} cached\n")
                out.flush()
                continue
            raw.write(f"==> {label}: building\n")
            out.write(f"{label} building ..." + ("" if tty else "\n"))
            out.flush()
            began = time.monotonic()
            _phase = ""
            try:
                with _Ticker(out, f"{label} building", began, tty):
                    results.append(step.run())
            except BaseException as exc:
                raw.write(f"==> {label}: failed: {exc!r}\n")
                raw.flush()
                spent = format_duration(time.monotonic() - began)
                out.write(("\r" if tty else "") + f"{label} FAILED after {spent}\n")
                out.write(f"--- last {TAIL_LINES} lines of {display_path(log_path)} ---\n")
                out.write("".join(f"  {line}\n" for line in tail(log_path)))
                out.flush()
                if isinstance(exc, Exception):
                    raise StepFailed(step, log_path, exc) from exc
                raise
            done = (f"done in {format_duration(time.monotonic() - began)} "
                    f"(total {format_duration(time.monotonic() - started)})")
            raw.write(f"==> {label}: {done}\n")
            out.write((f"\r{label} building ... " if tty else f"{label} ") + done + ("\033[K" if tty else "") + "\n")
            out.flush()
    out.write(f"{title}: ready in {format_duration(time.monotonic() - started)}\n")
    out.flush()
    return results
