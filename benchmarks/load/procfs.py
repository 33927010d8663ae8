"""Memory and CPU of a process tree from ``/proc`` (Linux only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class TreeStats:
    """One reading of a process and its descendants.

    Attributes:
        rss_bytes: VmRSS of the root process (``/proc/PID/status``), bytes.
        tree_rss_bytes: sum of VmRSS over the root and its live descendants, bytes (shared pages count once
            per process, so this over-counts memory shared between them).
        cpu_s: user + system CPU seconds of the root and its live descendants since they started.
        processes: how many processes were read.
    """

    rss_bytes: int
    tree_rss_bytes: int
    cpu_s: float
    processes: int


def vm_rss_bytes(pid: int) -> int:
    """VmRSS of one process in bytes (0 once it has exited)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # the value is in kB
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def allowed_cpus(pid: int) -> str:
    """The cores a process may run on (``Cpus_allowed_list`` of /proc/PID/status, e.g. ``"0"``)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return ""


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process in seconds (0 once it has exited)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is the state
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_seconds(cores: list[int] | None) -> float:
    """CPU seconds the given cores (all when None) spent busy since boot, from /proc/stat: user, nice,
    system, irq and softirq time, whatever process ran."""
    wanted = None if cores is None else {f"cpu{c}" for c in cores}
    total = 0
    for line in (PROC / "stat").read_text().splitlines():
        name = line.split(" ", 1)[0]
        if not name.startswith("cpu") or name == "cpu" or (wanted is not None and name not in wanted):
            continue
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in line.split()[1:8])
        total += user + nice + system + irq + softirq
    return total / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren, ...), from the parent ids in /proc/*/stat."""
    parents: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    frontier = [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found.extend(children)
        frontier.extend(children)
    return found


def tree_stats(pid: int) -> TreeStats:
    """RSS and CPU of ``pid`` and its descendants now."""
    pids = [pid, *descendants(pid)]
    rss = [vm_rss_bytes(p) for p in pids]
    return TreeStats(
        rss_bytes=rss[0],
        tree_rss_bytes=sum(rss),
        cpu_s=sum(cpu_seconds(p) for p in pids),
        processes=len(pids),
    )


def parse_cores(text: str | None) -> list[int] | None:
    """``"0"``, ``"0,2"``, ``"0-3"`` -> a sorted core list; None or ``""`` -> None (no pinning)."""
    if not text:
        return None
    cores: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        cores.update(range(int(low), int(high or low) + 1))
    return sorted(cores)
