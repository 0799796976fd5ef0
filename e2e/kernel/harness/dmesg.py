"""The guest's kernel log, read from its console, judged phase by phase: any iSCSI, SCSI, block
or file-system error fails the phase, except those a phase expects (a restart breaks the
connection; a drain fences commands). One "Power-on or device reset occurred" per disk and
phase is the normal first unit attention after a login."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] (.*)$")
PHASE_MARK = re.compile(r"^spindle-guest: phase (\S+)$")
POWER_ON = re.compile(r"^sd (\d+:\d+:\d+:\d+): .*Power-on or device reset occurred")
ATTACH = re.compile(r"^scsi (\d+:\d+:\d+:\d+): Direct-Access")  # a disk found at login
# open-iscsi's own login race (open-iscsi/open-iscsi#424): iscsid sends the next login PDU
# before the kernel has freed the previous one; the connection is dropped and iscsid retries.
LOGIN_RACE = re.compile(r"^\s*(connection\d+:\d+): Login/Text in progress\. Cannot start new task")
CONN_ERROR = re.compile(r"^\s*(connection\d+:\d+): detected conn error")

# What counts as an error, by name (the names are what a phase may allow).
PROBLEMS: dict[str, re.Pattern[str]] = {
    "connection error": re.compile(r"detected conn error"),
    "ping timeout": re.compile(r"ping timeout"),
    "recovery timeout": re.compile(r"session recovery timed out"),
    "sense": re.compile(r"Sense Key|Add\. Sense|ASC="),
    "unhandled": re.compile(r"Unhandled"),
    "abort": re.compile(r"(?i)\babort"),
    "reset": re.compile(r"(?i)\breset"),
    "timeout": re.compile(r"(?i)timed out|timing out"),
    "I/O error": re.compile(r"I/O error|critical \w+ error|blk_update_request"),
    "offline": re.compile(r"offline device|rejecting I/O"),
    "file system": re.compile(r"EXT4-fs.*(error|warning|[Ff]ailed)|JBD2: .*(error|[Ff]ailed)"
                              r"|Remounting filesystem read-only"),
    "kernel bug": re.compile(r"Call Trace|BUG:|WARNING:|Oops|blocked for more than"),
}


@dataclass(frozen=True)
class Rules:
    # Problems a phase expects, by name, with how many times (None: any number).
    allowed: dict[str, int | None] = field(default_factory=dict)
    required: tuple[str, ...] = ()  # regexes that must appear in the phase's kernel lines
    # Power-on unit attentions per disk besides the one after its login (a new agent process
    # is a new I_T nexus: an agent restart raises one).
    extra_power_on: int = 0


def split_phases(console: str) -> dict[str, list[str]]:
    """Kernel lines of each phase (between the guest's markers); before the first: "boot"."""
    phases: dict[str, list[str]] = {"boot": []}
    current = "boot"
    for raw in console.splitlines():
        m = KERNEL_LINE.match(raw.strip("\r"))
        if not m:
            continue
        text = m.group(1)
        mark = PHASE_MARK.match(text)
        if mark:
            current = mark.group(1)
            phases.setdefault(current, [])
        else:
            phases[current].append(text)
    return phases


def problems_of(lines: list[str], rules: Rules) -> list[str]:
    found = []
    seen: Counter[str] = Counter()
    power_on: Counter[str] = Counter()
    raced: set[str] = set()
    for line in lines:
        attach = ATTACH.match(line)
        if attach:  # a new login; SCSI addresses are reused after a logout
            power_on[attach.group(1)] = 0
        race = LOGIN_RACE.match(line)
        if race:
            raced.add(race.group(1))
            continue
        conn = CONN_ERROR.match(line)
        if conn and conn.group(1) in raced:  # the end of that race, not the target's doing
            raced.discard(conn.group(1))
            continue
        m = POWER_ON.match(line)
        if m:
            power_on[m.group(1)] += 1
            if power_on[m.group(1)] > 1 + rules.extra_power_on:
                found.append(f"one power-on/reset unit attention too many: {line}")
            continue
        for name, pattern in PROBLEMS.items():
            if pattern.search(line):
                seen[name] += 1
                limit = rules.allowed.get(name, 0)
                if limit is not None and seen[name] > limit:
                    found.append(f"{name}: {line}")
                break
    for req in rules.required:
        if not any(re.search(req, line) for line in lines):
            found.append(f"expected a kernel message matching {req!r}, none came")
    return found


def judge(console: str, rules: dict[str, Rules]) -> dict[str, list[str]]:
    """Problems per phase (the boot's lines are not judged: no iSCSI before the phases)."""
    result = {}
    for phase, lines in split_phases(console).items():
        if phase != "boot":
            result[phase] = problems_of(lines, rules.get(phase, Rules()))
    return result
