"""CPU time and peak memory of a process group, from /proc (Linux only).

Every process the harness starts leads its own process group, so "the proxy" is that
group: a shadowproxy supervisor with its workers, or an nginx master with its worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Stat:
    pid: int
    ppid: int
    pgrp: int
    cpu_ticks: int  # utime + stime


def parse_stat(line: str) -> Stat:
    # comm is in parentheses and may itself hold spaces and ')': split after the last one.
    head, _, tail = line.rpartition(")")
    fields = tail.split()
    pid = int(head.split("(", 1)[0])
    return Stat(
        pid=pid, ppid=int(fields[1]), pgrp=int(fields[2]), cpu_ticks=int(fields[11]) + int(fields[12])
    )


def field_kib(text: str, name: str) -> int:
    """A `Name:   1234 kB` line's number, from /proc/<pid>/status or smaps_rollup."""
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0  # kernel threads and zombies have no memory lines


def _group_pids(pgrp: int) -> list[Stat]:
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # it exited while we looked
        if stat.pgrp == pgrp:
            found.append(stat)
    return found


def group_cpu_s(pgrp: int) -> float:
    """CPU seconds (user + system) used so far by the live members of a process group."""
    return sum(s.cpu_ticks for s in _group_pids(pgrp)) / CLOCK_TICKS


def group_peak_rss_kib(pgrp: int) -> int:
    """Sum of each member's peak resident set (VmHWM): workers do not share their heaps, but
    a page two members share (a forked child's, copied on write) counts in both."""
    return _group_sum(pgrp, "status", "VmHWM")


def group_pss_kib(pgrp: int) -> int:
    """Sum of each member's proportional set size now (Pss): a page shared by n processes
    counts 1/n in each, so the sum is what the group holds, counted once."""
    return _group_sum(pgrp, "smaps_rollup", "Pss")


def _group_sum(pgrp: int, file: str, name: str) -> int:
    total = 0
    for s in _group_pids(pgrp):
        try:
            total += field_kib((PROC / str(s.pid) / file).read_text(), name)
        except OSError:
            continue  # it exited while we looked, or is not ours to read
    return total


@dataclass(frozen=True, slots=True)
class MachineCpu:
    """The machine's CPU time so far, all CPUs together, in clock ticks (/proc/stat)."""

    idle_ticks: int  # idle and iowait: time no process wanted the CPU
    total_ticks: int  # every state, steal included


def parse_machine_cpu(text: str) -> MachineCpu:
    """The first line of /proc/stat: `cpu  user nice system idle iowait irq softirq steal ...`.
    guest and guest_nice are already inside user and nice, so they are left out of the sum."""
    fields = [int(f) for f in text.split("\n", 1)[0].split()[1:]]
    return MachineCpu(idle_ticks=fields[3] + fields[4], total_ticks=sum(fields[:8]))


def machine_cpu() -> MachineCpu:
    return parse_machine_cpu((PROC / "stat").read_text())


def idle_cpus(before: MachineCpu, after: MachineCpu) -> float | None:
    """How many CPUs stood idle on average between two readings (0.0 to the CPU count)."""
    total = after.total_ticks - before.total_ticks
    if total <= 0:
        return None
    return (after.idle_ticks - before.idle_ticks) / total * (os.cpu_count() or 1)


def listening_sockets(port: int) -> int:
    """How many sockets listen on 127.0.0.1:port: one per worker under SO_REUSEPORT."""
    wanted = f"0100007F:{port:04X}"
    count = 0
    for line in (PROC / "net" / "tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A is TCP_LISTEN
            count += 1
    return count
