"""What every benchmark reports about the machine and a process's memory (Linux)."""

from __future__ import annotations

import os
import resource
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

from pipeline.machine import cpu_name


def rss_mb() -> float:
    """Resident set size of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def command_line() -> str:
    """The command that ran this benchmark, as a user would retype it (interpreter relative to here)."""
    rel = os.path.relpath(sys.executable)
    return shlex.join([rel if not rel.startswith("..") else sys.executable, *sys.argv])


def machine_line(threads: int, load_start: float, load_end: float | None = None) -> str:
    """First line of every benchmark's report: CPU, visible cores, torch threads and load."""
    load = f"load average {load_start:.1f}" + (f" at the start, {load_end:.1f} at the end" if load_end is not None else "")
    return f"machine: {cpu_name()}, {os.cpu_count()} CPUs visible, torch threads {threads}, {load}"


def print_report(threads: int, load_start: float, load_end: float, notes: list[str], columns: list[str],
                 rows: list[str], consequence: str) -> None:
    """A benchmark's report: machine and command lines, `notes`, a markdown table of `rows`, the load note."""
    print()
    print(machine_line(threads, load_start, load_end))
    print(f"command: {command_line()}")
    print("\n".join(notes))
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    print("\n".join(rows))
    print(load_note(load_end, consequence))


def load_note(load_end: float, consequence: str) -> str:
    """Last line of every report: whether other work shared the cores, and what that does to `consequence`."""
    cores = os.cpu_count()
    if load_end > (cores or 1):
        return f"load average at the end {load_end:.1f}, above {cores}: other work shared these cores and {consequence}"
    return f"load average at the end {load_end:.1f}, at most {cores}: no sign of other work on these cores"


def interleaved_times(arms: dict[str, Any], call: Callable[[Any], object], rounds: int, steps: int) -> dict[str, list[float]]:
    """ms per `call(arm)`, one entry per round: a warm-up call of each arm, then `rounds` rounds that each time
    `steps` calls of every arm in turn, so that the shared machine's drift hits all arms alike."""
    times: dict[str, list[float]] = {name: [] for name in arms}
    for arm in arms.values():
        call(arm)
    for _ in range(rounds):
        for name, arm in arms.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                call(arm)
            times[name].append((time.perf_counter() - t0) / steps * 1000)
    return times
