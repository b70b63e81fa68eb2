#!/usr/bin/env python3
"""systemctl and journalctl of the Tart double's VMs with ``TART_DOUBLE_SYSTEMD=1``.

Installed by ``tart run`` as ``/usr/local/sbin/systemctl`` and
``/usr/local/sbin/journalctl`` inside the VM (this one file; which tool it is
follows the name it was run as). Stdlib only: it runs with the VM's python3.
It keeps the contract fc-macos uses, not all of systemd:

``systemctl``: ``daemon-reload`` (no-op); ``enable|disable NAME`` (the
``[Install] WantedBy=`` symlink under /etc/systemd/system, as systemd makes it;
``tart run`` starts the units enabled in the VM at boot); ``start|stop|restart
NAME`` (``[Service] ExecStart=`` of /etc/systemd/system/NAME.service, started
in its own session, stdin /dev/null, stdout and stderr appended to the unit's
journal; a missing unit fails like systemd, exit 5); ``stop`` honours
``KillMode=`` (``process``: the main process only; ``control-group``, the
default: the main process and its descendants); ``is-active NAME`` (prints
active/inactive, exit 0/3); ``status NAME`` (short; exit 0 active, 3
inactive, 4 no such unit). ``Restart=`` is not emulated.

``journalctl -u NAME [-n N] [--no-pager] [-f]``: the unit's journal, i.e. the
service's own output plus systemd's "Started"/"Stopped" lines; ``-f`` follows
until killed.

State: main pids in /run/systemd/double/NAME.pid (VM-private, cleared by
``tart run`` like a reboot clears /run), journals in
/var/log/journal-double/NAME.log (the VM's /var).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

UNIT_DIR = Path("/etc/systemd/system")
STATE_DIR = Path("/run/systemd/double")
JOURNAL_DIR = Path("/var/log/journal-double")
STOP_TIMEOUT_S = 10.0


def unit_name(arg: str) -> str:
    return arg if "." in arg else f"{arg}.service"


def parse_unit(path: Path) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = sections.setdefault("", {})
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line:
            key, value = line.split("=", 1)
            current[key.strip()] = value.strip()
    return sections


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def main_pid(unit: str) -> int | None:
    try:
        pid = int((STATE_DIR / f"{unit}.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def journal(unit: str) -> Path:
    return JOURNAL_DIR / f"{unit}.log"


def log(unit: str, message: str) -> None:
    JOURNAL_DIR.mkdir(parents=True, exist_ok=True)
    with open(journal(unit), "a") as fh:
        fh.write(f"systemd[1]: {message}\n")


def unit_file(unit: str) -> Path | None:
    path = UNIT_DIR / unit
    return path if path.is_file() else None


def not_found(verb: str, unit: str) -> int:
    print(f"Failed to {verb} {unit}: Unit {unit} not found.", file=sys.stderr)
    return 5


def start(unit: str, verb: str = "start") -> int:
    path = unit_file(unit)
    if path is None:
        return not_found(verb, unit)
    if main_pid(unit):
        return 0
    service = parse_unit(path).get("Service", {})
    argv = shlex.split(service.get("ExecStart", "").lstrip("-@+!"))
    if not argv:
        print(f"Failed to {verb} {unit}: Unit {unit} has no ExecStart= setting.", file=sys.stderr)
        return 1
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    log(unit, f"Starting {unit}...")
    with open(journal(unit), "ab") as out:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd="/",
                                    start_new_session=True)
        except OSError as exc:
            log(unit, f"{unit}: Failed to execute {argv[0]}: {exc.strerror}")
            print(f"Job for {unit} failed because the control process exited with error code.",
                  file=sys.stderr)
            return 1
    (STATE_DIR / f"{unit}.pid").write_text(str(proc.pid))
    log(unit, f"Started {unit}.")
    return 0


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop(unit: str, verb: str = "stop") -> int:
    path = unit_file(unit)
    pid = main_pid(unit)
    if path is None and pid is None:
        return not_found(verb, unit)
    if pid is None:
        return 0
    kill_mode = parse_unit(path).get("Service", {}).get("KillMode", "control-group") if path else "control-group"
    targets = [pid] + ([] if kill_mode in ("process", "none") else _descendants(pid))
    if kill_mode == "none":
        targets = []
    log(unit, f"Stopping {unit}...")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for target in targets:
            try:
                os.kill(target, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(alive(t) for t in targets) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(alive(t) for t in targets):
            break
    (STATE_DIR / f"{unit}.pid").unlink(missing_ok=True)
    log(unit, f"Stopped {unit}.")
    return 0


def wanted_by(unit: str) -> list[Path]:
    path = unit_file(unit)
    install = parse_unit(path).get("Install", {}) if path else {}
    return [UNIT_DIR / f"{target}.wants" / unit for target in install.get("WantedBy", "").split()]


def enable(unit: str) -> int:
    if unit_file(unit) is None:
        print(f"Failed to enable unit: Unit file {unit} does not exist.", file=sys.stderr)
        return 1
    for link in wanted_by(unit):
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(UNIT_DIR / unit)
            print(f"Created symlink {link} \u2192 {UNIT_DIR / unit}.", file=sys.stderr)
    return 0


def disable(unit: str) -> int:
    if unit_file(unit) is None:
        print(f"Failed to disable unit: Unit file {unit} does not exist.", file=sys.stderr)
        return 1
    for link in UNIT_DIR.glob(f"*.wants/{unit}"):
        link.unlink()
        print(f"Removed \"{link}\".", file=sys.stderr)
    return 0


def enabled(unit: str) -> bool:
    return any(UNIT_DIR.glob(f"*.wants/{unit}"))


def status(unit: str) -> int:
    path = unit_file(unit)
    pid = main_pid(unit)
    if path is None and pid is None:
        print(f"Unit {unit} could not be found.", file=sys.stderr)
        return 4
    description = parse_unit(path).get("Unit", {}).get("Description", unit) if path else unit
    print(f"\u25cf {unit} - {description}")
    print(f"     Loaded: loaded ({path}; {'enabled' if enabled(unit) else 'disabled'})")
    print(f"     Active: {'active (running)' if pid else 'inactive (dead)'}")
    if pid:
        print(f"   Main PID: {pid}")
    return 0 if pid else 3


def systemctl(args: list[str]) -> int:
    args = [a for a in args if a not in ("--no-pager", "--quiet", "-q", "--no-block", "--now")]
    if not args:
        print("systemctl (Tart double): give a command", file=sys.stderr)
        return 1
    verb, names = args[0], [unit_name(a) for a in args[1:]]
    if verb == "daemon-reload":
        return 0
    single = {"start": start, "stop": stop, "enable": enable, "disable": disable, "status": status}
    if verb in single or verb in ("restart", "is-active"):
        if not names:
            print(f"Too few arguments.", file=sys.stderr)
            return 1
    code = 0
    for unit in names:
        if verb == "restart":
            rc = stop(unit, "restart") if unit_file(unit) else not_found("restart", unit)
            rc = rc or start(unit, "restart")
        elif verb == "is-active":
            active = main_pid(unit) is not None
            print("active" if active else "inactive")
            rc = 0 if active else 3
        elif verb in single:
            rc = single[verb](unit)
        else:
            print(f"Unknown command verb '{verb}' (the Tart double's systemctl).", file=sys.stderr)
            return 1
        code = code or rc
    return code


def _tail(path: Path, lines: int | None) -> tuple[list[str], int]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    text = data.decode(errors="replace").splitlines()
    return (text if lines is None else text[-lines:] if lines else []), len(data)


def journalctl(args: list[str]) -> int:
    unit, lines, follow = None, None, False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-u", "--unit"):
            unit, i = unit_name(args[i + 1]), i + 1
        elif arg.startswith("--unit="):
            unit = unit_name(arg.split("=", 1)[1])
        elif arg in ("-n", "--lines"):
            lines, i = int(args[i + 1]), i + 1
        elif arg.startswith("--lines="):
            lines = int(arg.split("=", 1)[1])
        elif arg in ("-f", "--follow"):
            follow = True
        elif arg not in ("--no-pager", "-q", "--quiet"):
            print(f"journalctl (Tart double): unsupported option {arg}", file=sys.stderr)
            return 1
        i += 1
    if unit is None:
        print("journalctl (Tart double): only -u NAME is supported", file=sys.stderr)
        return 1
    if follow and lines is None:
        lines = 10
    path = journal(unit)
    shown, offset = _tail(path, lines)
    try:
        if not shown and not follow:
            print("-- No entries --")
        for line in shown:
            print(line)
        sys.stdout.flush()
        while follow:
            time.sleep(0.2)
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except FileNotFoundError:
                continue
            end = chunk.rfind(b"\n") + 1
            if end:
                sys.stdout.write(chunk[:end].decode(errors="replace"))
                sys.stdout.flush()
                offset += end
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    return 0


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    tool = Path(argv[0]).name
    if tool == "journalctl":
        return journalctl(argv[1:])
    return systemctl(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
