"""``LocalProvider``: fc-agent on this Linux machine (needs /dev/kvm); no VM in between.

Files under ``<home>/local/``::

    local.json          the Firecracker binary and the agent's port
    agent.token         the agent's token (0600)
    agent.pid, agent.log
    state/              the agent's state directory; state/images/ holds the guest images

``<home>/setup.lock`` serialises setups. microVMs run in their own sessions, so
they keep running across agent restarts; ``vm_stop(force=True)`` stops them too.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fc_macos.config import AgentEndpoint, Config, read_json, write_json_atomic
from fc_macos.errors import AgentError, ConfigError, ConflictError, FcMacosError, SetupError
from fc_macos.progress import Progress
from fc_macos.providers.base import Check, SetupOptions, VMStatus
from fc_macos.providers.local_agent import AgentProcess, agent_request, free_port, port_is_free

KVM = Path("/dev/kvm")
FIRECRACKER_HINT = ("install Firecracker (https://github.com/firecracker-microvm/firecracker/releases) "
                    "or pass --firecracker-bin PATH to 'fc-macos setup'")
IMAGE_NAMES = {"kernel": "vmlinux", "initrd": "initrd.img", "rootfs": "rootfs.ext4"}


def check_kvm(path: Path = KVM) -> Check:
    if not path.exists():
        return Check("kvm", False, f"{path} does not exist",
                     "enable KVM: load kvm_intel or kvm_amd (or turn on nested virtualization for this VM)")
    if not os.access(path, os.R_OK | os.W_OK):
        return Check("kvm", False, f"{path} is not readable and writable by this user",
                     f"add yourself to its group: sudo usermod -aG $(stat -c %G {path}) $USER, then log in again")
    return Check("kvm", True, f"{path} is usable")


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _same_file(src: Path, dest: Path) -> bool:
    """Whether ``dest`` already holds exactly ``src``'s bytes."""
    if not dest.is_file() or dest.stat().st_size != src.stat().st_size:
        return False
    from fc_macos.images.builder import sha256_file

    return sha256_file(dest) == sha256_file(src)


@contextmanager
def setup_lock(home: Path) -> Iterator[None]:
    """Hold ``<home>/setup.lock``; ConflictError naming the holder's pid if taken."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "setup.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ConflictError(f"another setup is running (pid {holder})",
                                hint="wait for it to finish, then run the command again") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


class LocalProvider:
    """The ``local`` provider; see :class:`fc_macos.providers.base.Provider` for the contract."""

    name = "local"

    def __init__(self, home: Path, config: Config) -> None:
        self.home = home
        self.config = config
        self.run_dir = home / "local"
        self.agent = AgentProcess(self.run_dir)
        self.settings_file = self.run_dir / "local.json"

    # -- saved settings ----------------------------------------------------

    def _settings(self) -> dict[str, object]:
        data = read_json(self.settings_file)
        return data if isinstance(data, dict) else {}

    def _token(self) -> str | None:
        try:
            return self.agent.token_file.read_text().strip() or None
        except OSError:
            return None

    def _url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    # -- setup -------------------------------------------------------------

    def setup(self, options: SetupOptions, progress: Progress) -> AgentEndpoint:
        with setup_lock(self.home):
            progress.step("check-kvm", f"checking {KVM}")
            kvm = check_kvm()
            if not kvm.ok:
                raise SetupError("check-kvm", kvm.detail, hint=kvm.fix)
            progress.done("check-kvm", kvm.detail)
            firecracker = self._find_firecracker(options, progress)
            self._install_images(options, progress)
            token = self._ensure_token(options.force, progress)
            port = self._ensure_agent(firecracker, token, options.force, progress)
            endpoint = AgentEndpoint(self._url(port), token)
            progress.step("save-endpoint", "saving the agent endpoint")
            if AgentEndpoint.saved(self.home) == endpoint:
                progress.skip("save-endpoint", f"{self.home / 'agent.json'} is up to date")
            else:
                endpoint.save(self.home)
                progress.done("save-endpoint", str(self.home / "agent.json"))
            self.config.provider = self.name
            return endpoint

    def _find_firecracker(self, options: SetupOptions, progress: Progress) -> str:
        progress.step("firecracker", "finding the Firecracker binary")
        if options.firecracker_bin is not None:
            candidate: Path | None = Path(options.firecracker_bin).expanduser().resolve()
        else:
            saved = self._settings().get("firecracker_bin")
            found = str(saved) if saved else shutil.which("firecracker")
            candidate = Path(found) if found else None
        if candidate is None:
            raise SetupError("firecracker", "no 'firecracker' on PATH", hint=FIRECRACKER_HINT)
        if not _executable(candidate):
            raise SetupError("firecracker", f"{candidate} is not an executable file", hint=FIRECRACKER_HINT)
        progress.done("firecracker", str(candidate))
        return str(candidate)

    def _install_images(self, options: SetupOptions, progress: Progress) -> None:
        images = self.agent.images_dir
        given = {kind: getattr(options, kind) for kind in IMAGE_NAMES if getattr(options, kind) is not None}
        progress.step("install-images", f"installing guest images into {images}")
        for kind, path in given.items():  # check them all before touching anything
            if not Path(path).is_file():
                raise SetupError("install-images", f"{kind} file {path} does not exist",
                                 hint=f"check the --{kind} path")
        if given:
            stale_initrd = images / IMAGE_NAMES["initrd"]
            drop_initrd = "kernel" in given and "initrd" not in given and stale_initrd.exists()
            changed = [kind for kind, path in given.items() if not _same_file(Path(path), images / IMAGE_NAMES[kind])]
            if not changed and not drop_initrd and not options.force:
                progress.skip("install-images", f"{', '.join(IMAGE_NAMES[k] for k in given)} up to date in {images}")
                return
            images.mkdir(parents=True, exist_ok=True)
            (images / "manifest.json").unlink(missing_ok=True)  # no longer describes the set
            if drop_initrd:
                stale_initrd.unlink()  # an initrd belongs to its kernel
            for kind in changed:
                self._copy_image(Path(given[kind]), images / IMAGE_NAMES[kind], progress)
            progress.done("install-images", ", ".join(IMAGE_NAMES[k] for k in changed) or "initrd.img removed")
            return
        if (images / "vmlinux").exists() and (images / "rootfs.ext4").exists() and not options.force:
            progress.skip("install-images", f"images already in {images}")
            return
        if options.skip_assets:
            progress.skip("install-images", "--skip-assets given")
            return
        from fc_macos.images import build_images

        try:
            build_images("online", images, force=options.force, progress=progress)
        except FcMacosError as exc:
            raise SetupError("install-images", f"cannot build guest images: {exc.message}",
                             hint="pass --kernel/--rootfs (and --initrd) to use your own images, "
                                  "or --skip-assets to install none") from exc
        progress.done("install-images", "built from the online source")

    @staticmethod
    def _copy_image(src: Path, dest: Path, progress: Progress) -> None:
        tmp = dest.with_name(f".{dest.name}.tmp")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SetupError("install-images", f"cannot copy {src} to {dest}: {exc}",
                             hint="check free space and permissions") from exc
        progress.info(f"{src} -> {dest}")

    def _ensure_token(self, force: bool, progress: Progress) -> str:
        progress.step("token", "creating the agent token")
        token = self._token()
        if token and not force:
            progress.skip("token", f"{self.agent.token_file} exists")
            return token
        token = secrets.token_urlsafe(32)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.agent.token_file.with_name(".agent.token.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        os.replace(tmp, self.agent.token_file)
        progress.done("token", str(self.agent.token_file))
        return token

    def _ensure_agent(self, firecracker: str, token: str, force: bool, progress: Progress) -> int:
        progress.step("start-agent", "starting fc-agent")
        settings = self._settings()
        port = settings.get("port")
        pid = self.agent.pid()
        if pid and not force and isinstance(port, int) and settings.get("firecracker_bin") == firecracker:
            try:
                agent_request(self._url(port), token, "GET", "/v1/info")
            except AgentError:
                pass
            else:
                progress.skip("start-agent", f"fc-agent runs (pid {pid}) at {self._url(port)}")
                return port
        if pid:
            progress.info(f"stopping fc-agent (pid {pid})")
            self.agent.stop()
        port = self._start_agent(firecracker, token, port if isinstance(port, int) else None)
        progress.done("start-agent", f"pid {self.agent.pid()} at {self._url(port)}")
        return port

    def _start_agent(self, firecracker: str, token: str, port: int | None) -> int:
        if port is None or not port_is_free(port):
            port = free_port()
        pid = self.agent.start(port, firecracker)
        try:
            self.agent.wait_ready(pid, self._url(port), token)
        except BaseException:
            self.agent.stop()
            raise
        write_json_atomic(self.settings_file, {"firecracker_bin": firecracker, "port": port})
        return port

    # -- the rest of the Provider interface -------------------------------

    def endpoint(self) -> AgentEndpoint:
        return AgentEndpoint.load(self.home)

    def vm_status(self) -> VMStatus:
        settings = self._settings()
        port = settings.get("port")
        url = self._url(port) if isinstance(port, int) else None
        pid = self.agent.pid()
        agent_ok = False
        if pid and url:
            try:
                agent_request(url, self._token(), "GET", "/v1/info", timeout=2.0)
                agent_ok = True
            except AgentError:
                pass
        exists = bool(settings) and self._token() is not None
        details: dict[str, object] = {"pid": pid, "log": str(self.agent.log_file),
                                      "state_dir": str(self.agent.state_dir),
                                      "firecracker_bin": settings.get("firecracker_bin")}
        return VMStatus(name="local", provider=self.name, exists=exists, running=pid is not None,
                        state="running" if pid else ("stopped" if exists else "missing"),
                        address="127.0.0.1", agent_url=url, agent_ok=agent_ok, details=details)

    def vm_start(self, progress: Progress) -> VMStatus:
        settings = self._settings()
        token = self._token()
        firecracker = settings.get("firecracker_bin")
        if not settings or not token or not isinstance(firecracker, str):
            raise ConfigError("the local agent is not set up", hint="run 'fc-macos --provider local setup' first")
        with setup_lock(self.home):
            progress.step("start-agent", "starting fc-agent")
            if self.agent.pid():
                progress.skip("start-agent", "fc-agent runs already")
            else:
                port = settings.get("port")
                port = self._start_agent(firecracker, token, port if isinstance(port, int) else None)
                AgentEndpoint(self._url(port), token).save(self.home)
                progress.done("start-agent", self._url(port))
        return self.vm_status()

    def vm_stop(self, *, force: bool = False) -> VMStatus:
        status = self.vm_status()
        if force and status.agent_ok and status.agent_url:
            token = self._token()
            listing = agent_request(status.agent_url, token, "GET", "/v1/microvms")
            for vm in listing.get("microvms", []):
                if vm.get("state") not in ("stopped", "failed"):
                    agent_request(status.agent_url, token, "POST", f"/v1/microvms/{vm['name']}/stop",
                                  {"force": True, "timeout_s": 0}, timeout=30.0)
        self.agent.stop()
        return self.vm_status()

    def vm_shell(self, command: list[str] | None = None) -> int:
        """A shell (or ``command``) on this machine, in the agent's state directory."""
        argv = command or [os.environ.get("SHELL", "/bin/sh")]
        cwd = self.agent.state_dir if self.agent.state_dir.is_dir() else None
        try:
            return subprocess.call(argv, cwd=cwd)
        except OSError as exc:
            raise ConfigError(f"cannot run {argv[0]}: {exc}", hint="check the command") from exc

    def vm_logs(self, *, follow: bool = False) -> Iterator[str]:
        log = self.agent.log_file
        if not log.exists():
            raise ConfigError(f"no agent log at {log}", hint="run 'fc-macos setup' first")
        with log.open(errors="replace") as fh:
            yield from fh
            while follow:
                line = fh.readline()
                if line:
                    yield line
                else:
                    time.sleep(0.2)

    def doctor(self) -> list[Check]:
        version = sys.version_info
        checks = [Check("python", version >= (3, 10), f"Python {version.major}.{version.minor}.{version.micro}",
                        "install Python 3.10 or newer")]
        checks.append(check_kvm())
        saved = self._settings().get("firecracker_bin") or shutil.which("firecracker")
        if saved and _executable(Path(str(saved))):
            checks.append(Check("firecracker", True, str(saved)))
        else:
            checks.append(Check("firecracker", False, f"not found ({saved or 'not on PATH'})", FIRECRACKER_HINT))
        images = self.agent.images_dir
        have = (images / "vmlinux").exists() and (images / "rootfs.ext4").exists()
        checks.append(Check("images", have, f"{images}" if have else f"no vmlinux/rootfs.ext4 in {images}",
                            "run 'fc-macos setup --kernel VMLINUX --rootfs ROOTFS'"))
        status = self.vm_status()
        if status.agent_ok:
            checks.append(Check("agent", True, f"answers at {status.agent_url}"))
        else:
            detail = "not running" if not status.running else f"not answering at {status.agent_url}"
            checks.append(Check("agent", False, detail,
                                "run 'fc-macos vm start' (or 'fc-macos setup' if it was never set up)"))
        return checks
