# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a VM's boot time goes: the launcher's own marks (qemu started, the ready line on the
console, SSH answering, the ports listening) joined with the guest's (the kernel's start, the
initramfs, systemd and its units), all in seconds since qemu started.

The guest's clock starts with its kernel; one reading of /proc/uptime taken over SSH at a known
moment places the kernel's start on the launcher's clock. Pure: the launcher collects the text.
"""

from __future__ import annotations

import re
from typing import Any

# Units the timeline always asks about, besides the services the roles enabled.
BOOT_UNITS = ["immutable-infra-firstboot.service", "immutable-infra-hostkeys.service", "systemd-journald.service",
              "systemd-udevd.service", "systemd-networkd.service", "ssh.service", "immutable-infra-ready.service"]
# The targets the boot goes through, for the critical chain between them and the units.
TARGETS = ["local-fs-pre.target", "local-fs.target", "sysinit.target", "sockets.target", "basic.target",
           "network-pre.target", "network.target", "network-online.target", "multi-user.target"]
CHAIN_END = "multi-user.target"
INIT_LINE = re.compile(r"^\[\s*(?P<seconds>\d+\.\d+)\] Run \S+ as init process", re.MULTILINE)
# (mark, the phase that ends at it), in boot order.
PHASES = [("kernel", "firmware"), ("initramfs", "kernel"), ("systemd", "initramfs"),
          ("first_boot", "systemd to first boot"), ("sshd", "first boot to sshd"),
          ("ssh", "sshd to a login"), ("ports", "login to the ports")]


def facts_script(units: list[str]) -> str:
    """One shell command whose output facts() reads: systemd's timestamps of itself, of the units and of
    the boot's targets with what each is ordered after, and the kernel's line for the start of init.
    (systemd-analyze critical-chain says the same from every unit, at seconds of emulated work.)"""
    quoted = " ".join(f"'{unit}'" for unit in dict.fromkeys([*units, *TARGETS]))
    return ("systemctl show -p UserspaceTimestampMonotonic -p FinishTimestampMonotonic; echo; "
            "systemctl show -p Id -p After -p InactiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic "
            f"-- {quoted}; echo; dmesg 2>/dev/null | grep -m 1 ' as init process'; exit 0")


TIMESTAMPS = {"UserspaceTimestampMonotonic": "userspace", "FinishTimestampMonotonic": "finished",
              "InactiveExitTimestampMonotonic": "started", "ActiveEnterTimestampMonotonic": "active"}


def facts(output: str) -> dict[str, Any]:
    """The guest's side of the timeline from facts_script's output, in seconds of the guest's clock:
    systemd's own times, each unit's (started, active, and the units it is ordered after)."""
    manager: dict[str, float] = {}
    units: dict[str, dict[str, Any]] = {}
    for block in re.split(r"\n\s*\n", output):
        fields = dict(line.strip().split("=", 1) for line in block.splitlines() if "=" in line)
        times: dict[str, Any] = {TIMESTAMPS[key]: int(value) / 1e6 for key, value in fields.items()
                                 if key in TIMESTAMPS and value.isdigit() and int(value) > 0}
        if "Id" in fields:
            if times:
                units[fields["Id"]] = dict(times, after=fields.get("After", "").split())
        else:
            manager.update(times)
    init = INIT_LINE.search(output)
    return {"manager": manager, "units": units, "init": float(init.group("seconds")) if init else None}


def critical_chain(units: dict[str, dict[str, Any]], end: str = CHAIN_END) -> list[str]:
    """systemd's critical chain, among the units known: from end, each step goes to the unit it is
    ordered after that became active last before it started; the boot waited for that one."""
    chain: list[str] = []
    current: str | None = end
    while current in units and current not in chain:
        chain.append(current)
        times = units[current]
        began = times.get("started", times.get("active"))
        if began is None:
            break
        candidates = [(units[name]["active"], name) for name in times.get("after", [])
                      if "active" in units.get(name, {}) and units[name]["active"] <= began]
        current = max(candidates)[1] if candidates else None
    return chain


def timeline(host: dict[str, float], kernel_start: float | None, guest: dict[str, Any] | None) -> dict[str, Any]:
    """The boot timeline in seconds since qemu started. host: the launcher's marks (ready_line, ssh,
    ports); kernel_start: where the guest's clock starts on the launcher's; guest: facts()."""
    marks: dict[str, float] = {}
    units: dict[str, dict[str, float]] = {}
    chain: list[dict[str, Any]] = []
    if kernel_start is not None and guest:
        offset = kernel_start
        marks["kernel"] = offset
        if guest.get("init") is not None:
            marks["initramfs"] = offset + guest["init"]
        userspace = guest["manager"].get("userspace")
        if userspace is not None:
            marks["systemd"] = offset + userspace
        if guest["manager"].get("finished") is not None:
            marks["boot_finished"] = offset + guest["manager"]["finished"]
        units = {unit: {key: round(offset + value, 3) for key, value in times.items() if key != "after"}
                 for unit, times in guest["units"].items() if not unit.endswith(".target")}
        for mark, unit in (("first_boot", BOOT_UNITS[0]), ("sshd", "ssh.service")):
            if "active" in units.get(unit, {}):
                marks[mark] = units[unit]["active"]
        chain = [_link(name, guest["units"][name], offset) for name in critical_chain(guest["units"])]
    marks.update({name: value for name, value in host.items() if value is not None})
    return {"marks": {name: round(value, 3) for name, value in marks.items()}, "phases": phases(marks),
            "units": units, "critical_chain": chain}


def _link(name: str, times: dict[str, Any], offset: float) -> dict[str, Any]:
    """A unit of the critical chain: when it became active and how long it took to start."""
    took = times["active"] - times["started"] if "started" in times and "active" in times else None
    return {"unit": name, "at": round(offset + times["active"], 3) if "active" in times else None,
            "took": round(took, 3) if took is not None and not name.endswith(".target") else None}


def phases(marks: dict[str, float]) -> list[dict[str, Any]]:
    """Consecutive phases between the marks there are, in boot order; a mark earlier than the one
    before it (units start side by side) ends an empty phase."""
    found, previous = [], 0.0
    for mark, phase in PHASES:
        if mark not in marks:
            continue
        end = max(marks[mark], previous)
        found.append({"phase": phase, "until": mark, "seconds": round(end - previous, 3)})
        previous = end
    return found


def summary(boot: dict[str, Any]) -> str:
    """One line of the timeline: 'firmware 0.4 s, kernel 1.6 s, ...'."""
    return ", ".join(f"{phase['phase']} {phase['seconds']:.1f} s" for phase in boot.get("phases") or [])
