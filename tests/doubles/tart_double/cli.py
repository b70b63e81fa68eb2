"""Command line of the Tart double: Tart 2.32.1's commands, flags, outputs and exit codes."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import NoReturn

from tart_double import netns, state

VERSION = "2.32.1"
EXIT_STATE = 2
EXIT_USAGE = 64
OCI_NAME = re.compile(r"^[\w.-]+\.[\w.-]+(:\d+)?/[\w./-]+(:[\w.-]+|@sha256:[0-9a-f]+)?$")


class Failure(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"Error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _existing(name: str) -> state.VM:
    vm = state.vm(name)
    if not vm.exists:
        raise Failure(f'the specified VM "{name}" does not exist', EXIT_STATE)
    return vm


def _running(name: str) -> state.VM:
    vm = _existing(name)
    if not vm.running:
        raise Failure(f'VM "{name}" is not running', EXIT_STATE)
    return vm


def cmd_clone(args: argparse.Namespace) -> int:
    new = state.vm(args.new)
    if new.exists:
        raise Failure(f'VM "{args.new}" already exists')
    if OCI_NAME.match(args.source):
        state.record_oci(args.source)
    else:
        _existing(args.source)
    new.create(args.source)
    if os.environ.get("TART_DOUBLE_FAIL_CLONE") == "1":
        raise Failure("failed to pull the image: connection reset by peer (TART_DOUBLE_FAIL_CLONE)")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    vm = _existing(args.name)
    if vm.running:
        raise Failure(f'VM "{args.name}" is running: it must be stopped to change its settings')
    config = vm.config
    if args.cpu is not None:
        config["cpu"] = args.cpu
    if args.memory is not None:
        config["memory"] = args.memory
    if args.disk_size is not None:
        if args.disk_size < config.get("disk", 0):
            raise Failure("the disk can only grow")
        config["disk"] = args.disk_size
    vm.save_config(config)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    vm = _existing(args.name)
    if vm.running:
        raise Failure("VM is already running!", EXIT_STATE)
    if args.nested and os.environ.get("TART_DOUBLE_NO_NESTED") == "1":
        raise Failure("Nested virtualization is only available for Mac with the M3 chip, and later")
    if os.geteuid() != 0:
        raise Failure("the Tart double needs root: it makes network namespaces")
    if not os.path.exists("/dev/kvm"):
        raise Failure("the Tart double needs /dev/kvm on this machine")
    stop = {"flag": False}

    def on_signal(_sig: int, _frame: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        addresses = netns.start(vm)
    except RuntimeError as exc:
        netns.teardown(vm)
        raise Failure(f"cannot start the VM: {exc}") from exc
    systemd = os.environ.get("TART_DOUBLE_SYSTEMD") == "1"
    vm.boot(systemd)
    vm.save_run_info({"state": "running", "pid": os.getpid(), "systemd": systemd, **addresses})
    if systemd:
        _start_enabled_units(vm)
    print(f"VM {args.name} running at {addresses['ip']}", file=sys.stderr, flush=True)
    try:
        while not stop["flag"]:
            time.sleep(0.1)
    finally:
        netns.teardown(vm)
        vm.save_run_info({"state": "stopped"})
    return 0


def _start_enabled_units(vm: state.VM) -> None:
    """systemd's boot: start the units enabled in the VM (failures go to the unit's journal)."""
    for unit in vm.enabled_units():
        try:
            subprocess.run(netns.exec_argv(vm, ["systemctl", "start", unit]), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=netns.guest_env(False),
                           check=False, timeout=60)
        except subprocess.TimeoutExpired:
            pass


def cmd_ip(args: argparse.Namespace) -> int:
    vm = _existing(args.name)
    deadline = time.monotonic() + (args.wait or 0)
    while True:
        if vm.running and vm.run_info.get("ip"):
            print(vm.run_info["ip"])
            return 0
        if time.monotonic() >= deadline:
            raise Failure("no IP address found, is your VM running?")
        time.sleep(0.2)


def cmd_exec(args: argparse.Namespace) -> int:
    vm = _running(args.name)
    if not args.command:
        raise Failure("missing expected argument '<command> ...'", EXIT_USAGE)
    proc = subprocess.run(
        netns.exec_argv(vm, args.command),
        stdin=None if args.interactive else subprocess.DEVNULL,
        env=netns.guest_env(args.tty),
        check=False,
    )
    return proc.returncode


def _stopped(vm: state.VM) -> bool:
    return not vm.running


def cmd_stop(args: argparse.Namespace) -> int:
    vm = _running(args.name)
    pid = int(vm.run_info["pid"])
    timeout = 30 if args.timeout is None else args.timeout
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while not _stopped(vm) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not _stopped(vm):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        netns.teardown(vm)
        vm.save_run_info({"state": "stopped"})
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    for name in args.names:
        vm = _existing(name)
        if vm.running:
            raise Failure(f'failed to delete VM "{name}": it is running, stop it first')
        vm.delete()
    return 0


def _state(vm: state.VM) -> str:
    return "running" if vm.running else "stopped"


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    now = datetime.now(timezone.utc).isoformat()
    for image in state.oci_images():
        rows.append({"Source": "OCI", "Name": image, "Disk": 20, "Size": 5, "Accessed": now,
                     "Running": False, "State": "stopped"})
    for vm in state.all_vms():
        rows.append({"Source": "local", "Name": vm.name, "Disk": vm.config.get("disk", 20),
                     "Size": int(vm.size_gb()), "Accessed": now, "Running": vm.running, "State": _state(vm)})
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print("Source Name Disk Size Accessed State")
        for row in rows:
            print(f"{row['Source']} {row['Name']} {row['Disk']} {row['Size']} {row['Accessed']} {row['State']}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    vm = _existing(args.name)
    config = vm.config
    data = {"OS": config.get("os", "linux"), "CPU": config.get("cpu", 4), "Memory": config.get("memory", 4096),
            "Disk": config.get("disk", 20), "DiskFormat": "raw", "Size": f"{vm.size_gb():.3f}",
            "Display": "1024x768", "Running": vm.running, "State": _state(vm)}
    if args.format == "json":
        print(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            print(f"{key} {value}")
    return 0


def build_parser() -> Parser:
    parser = Parser(prog="tart")
    parser.add_argument("--version", action="store_true")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    p = sub.add_parser("clone")
    p.add_argument("source")
    p.add_argument("new")
    p.set_defaults(func=cmd_clone)
    p = sub.add_parser("set")
    p.add_argument("name")
    p.add_argument("--cpu", type=int)
    p.add_argument("--memory", type=int)
    p.add_argument("--disk-size", type=int)
    p.set_defaults(func=cmd_set)
    p = sub.add_parser("run")
    p.add_argument("name")
    p.add_argument("--no-graphics", action="store_true")
    p.add_argument("--nested", action="store_true")
    p.add_argument("--dir", action="append", default=[])
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("ip")
    p.add_argument("name")
    p.add_argument("--wait", type=int)
    p.add_argument("--resolver", choices=["dhcp", "arp", "agent"], default="dhcp")
    p.set_defaults(func=cmd_ip)
    p = sub.add_parser("exec")
    p.add_argument("-i", dest="interactive", action="store_true")
    p.add_argument("-t", dest="tty", action="store_true")
    p.add_argument("name")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_exec)
    p = sub.add_parser("list")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("get")
    p.add_argument("name")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_get)
    p = sub.add_parser("stop")
    p.add_argument("name")
    p.add_argument("--timeout", type=int)
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser("delete")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=cmd_delete)
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(os.environ.get("TART_DOUBLE_VERSION", VERSION))
        return 0
    if not args.command:
        parser.error("missing subcommand")
    try:
        return int(args.func(args))
    except Failure as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.code
