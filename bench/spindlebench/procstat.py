"""Read CPU time, memory and TCP sessions of a process tree from /proc."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat the harness needs."""

    pid: int
    ppid: int
    cpu_ticks: int  # utime + stime + cutime + cstime


def parse_stat(text: str) -> ProcStat:
    """Parse one /proc/PID/stat line; the command name may hold spaces and parentheses."""
    head, _, rest = text.rpartition(")")
    if not head or not rest:
        raise ValueError(f"malformed /proc stat line: {text[:80]!r}")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # fields[0] is field 3 (state); utime..cstime are fields 14..17.
    if len(fields) < 15:
        raise ValueError(f"short /proc stat line: {text[:80]!r}")
    ppid = int(fields[1])
    ticks = sum(int(v) for v in fields[11:15])
    return ProcStat(pid=pid, ppid=ppid, cpu_ticks=ticks)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def tree(root: int) -> list[int]:
    """`root` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        text = _read(f"/proc/{entry}/stat")
        if text is None:
            continue
        try:
            st = parse_stat(text)
        except ValueError:
            continue
        children.setdefault(st.ppid, []).append(st.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    """User + system CPU time of the process tree under `root` (threads and reaped
    children included), in seconds. Resolution: one clock tick (usually 10 ms)."""
    ticks = 0
    for pid in tree(root):
        text = _read(f"/proc/{pid}/stat")
        if text is not None:
            ticks += parse_stat(text).cpu_ticks
    return ticks / CLOCK_TICKS


def status_field(text: str, key: str) -> int:
    """An integer field (e.g. VmRSS in kB, Threads) from a /proc/PID/status text."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise ValueError(f"no {key} in /proc status")


@dataclass(frozen=True)
class Footprint:
    """Resident memory and thread count of a process tree."""

    rss_kib: int
    threads: int
    processes: int


def footprint(root: int) -> Footprint:
    rss = threads = procs = 0
    for pid in tree(root):
        text = _read(f"/proc/{pid}/status")
        if text is None:
            continue
        rss += status_field(text, "VmRSS")
        threads += status_field(text, "Threads")
        procs += 1
    if procs == 0:
        raise ProcessLookupError(f"process {root} is gone")
    return Footprint(rss_kib=rss, threads=threads, processes=procs)


def _hex_endpoint(host: str, port: int) -> str:
    """An IPv4 endpoint as /proc/net/tcp spells it (little-endian address, hex port)."""
    packed = socket.inet_aton(host)
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def established_to(host: str, port: int, table: str | None = None) -> int:
    """How many ESTABLISHED TCP connections the server side at host:port holds."""
    if table is None:
        table = _read("/proc/net/tcp") or ""
    local = _hex_endpoint(host, port)
    count = 0
    for line in table.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 3 and cols[1] == local and cols[3] == "01":
            count += 1
    return count


def port_free(host: str, port: int) -> bool:
    """Whether a TCP listener could bind host:port now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of `pid` so far: how often
    its threads were scheduled, i.e. woke up."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError as err:
        raise ProcessLookupError(f"process {pid} is gone") from err
    for tid in tasks:
        text = _read(f"/proc/{pid}/task/{tid}/status")
        if text is not None:
            total += (status_field(text, "voluntary_ctxt_switches")
                      + status_field(text, "nonvoluntary_ctxt_switches"))
    return total


def open_files(pid: int) -> int:
    """Descriptors `pid` holds open."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError as err:
        raise ProcessLookupError(f"process {pid} is gone") from err
