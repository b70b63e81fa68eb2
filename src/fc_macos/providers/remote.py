"""``RemoteProvider``: an fc-agent on another machine, reached through a context.

The machine (a Linux server with KVM) is someone else's to run: fc-agent is
installed there (``pip install fc-macos``, ``fc-agent install-service --tls``)
and the client knows it only by a context (:mod:`fc_macos.contexts`): an
HTTPS URL, a token and the pinned certificate fingerprint. So this provider
drives no machine: ``vm start`` checks that the agent answers, ``vm stop``,
``vm shell`` and ``vm logs`` are refused with the command to run on the server.

``setup`` runs the shared step engine (:mod:`fc_macos.providers.setup_steps`)
over what can be done through the agent's API:

    check-agent          /healthz and /v1/info over the pinned TLS with the token
    install-firecracker  a --firecracker-bin is uploaded through the agent (PUT
                         /v1/firecracker: it keeps it once its --version answers,
                         and new microVMs run it; content it runs already is not
                         sent again); otherwise reports the Firecracker it runs
    install-images       given images (--images/--kernel/--initrd/--rootfs) are
                         uploaded into the agent's image directory under their
                         standard names (PUT /v1/images; content it has is not
                         sent again); otherwise reports the images it serves.
                         An older fc-agent without the upload endpoint: the step
                         says so and how to put them on the server instead
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from fc_macos._version import __version__
from fc_macos.agent_sync import PROBE_TIMEOUT_S, BlockingAgent
from fc_macos.config import AgentEndpoint, Config
from fc_macos.contexts import REMOTE_PROVIDER, Context
from fc_macos.errors import FcMacosError, NotFoundError, ProviderError, SetupError
from fc_macos.image_names import BY_KIND, INITRD, MANIFEST
from fc_macos.progress import Progress
from fc_macos.providers.base import Check, Host, SetupOptions, StopReport, VMStatus
from fc_macos.providers.image_install import given_images
from fc_macos.providers.setup_steps import Skipped, Step, run_steps, setup_lock

if TYPE_CHECKING:
    from fc_macos.agent.client import AgentClient

IMAGE_KEYS = ("kernel", "initrd", "rootfs")
#: Where fc-agent's API takes images (an older agent's /openapi.json lacks it).
UPLOAD_PATH_PREFIX = "/v1/images"
#: Where fc-agent's API takes a Firecracker binary.
FIRECRACKER_PATH = "/v1/firecracker"


class RemoteProvider:
    """The ``remote`` provider of ``context``; see :class:`fc_macos.providers.base.Provider`."""

    name = REMOTE_PROVIDER

    def __init__(self, home: Path, config: Config, context: Context) -> None:
        self.home = home
        self.config = config
        self.context = context

    def endpoint(self) -> AgentEndpoint:
        return self.context.endpoint()

    def _agent(self, timeout: float = PROBE_TIMEOUT_S) -> BlockingAgent:
        return BlockingAgent.from_endpoint(self.endpoint(), timeout=timeout, home=self.home)

    def _server_side(self, what: str, command: str) -> NoReturn:
        raise ProviderError(f"fc-macos does not {what} of context '{self.context.name}': "
                            f"fc-agent runs on {self.context.host}, which fc-macos reaches only through the agent",
                            hint=f"on {self.context.host}: {command}")

    def open_host(self, options: SetupOptions, progress: Progress) -> Host:
        self._server_side("drive the machine", "pip install -U fc-macos && sudo fc-agent install-service --tls")

    # -- setup ---------------------------------------------------------------------------------

    def setup(self, options: SetupOptions, progress: Progress) -> AgentEndpoint:
        """Check the agent and what it serves, through its API (see the module docstring)."""
        with setup_lock(self.home), self._agent() as agent:
            run = _RemoteSetup(self.context, agent, options, progress)
            run_steps(run.steps(), progress, [])
        return self.endpoint()

    # -- the rest of the Provider interface ----------------------------------------------------

    def vm_status(self) -> VMStatus:
        details: dict[str, object] = {"context": self.context.name, "fingerprint": self.context.fingerprint}
        agent_ok = False
        try:
            with self._agent() as agent:
                details["agent_version"] = agent.health().get("version")
                agent.info()
            agent_ok = True
        except FcMacosError as exc:
            details["error"] = exc.message
        return VMStatus(self.context.name, self.name, exists=True, running=agent_ok,
                        state="running" if agent_ok else "unreachable", address=self.context.host,
                        agent_url=self.context.url, agent_ok=agent_ok, details=details)

    def vm_start(self, progress: Progress) -> VMStatus:
        """A remote agent is started on its host: this only checks that it answers."""
        status = self.vm_status()
        if not status.agent_ok:
            raise ProviderError(f"the fc-agent of context '{self.context.name}' does not answer "
                                f"({status.details.get('error')}), and fc-macos does not start a remote agent",
                                hint=f"on {self.context.host}: sudo systemctl start fc-agent "
                                "(or 'fc-agent --tls ...' by hand)")
        return status

    def vm_stop(self, *, force: bool = False) -> StopReport:
        self._server_side("stop the agent", "sudo systemctl stop fc-agent (its microVMs keep running); "
                          "here, 'fc-macos microvm stop --name NAME' stops one microVM")

    def vm_shell(self, command: list[str] | None = None) -> int:
        self._server_side("open a shell on the machine", "log in with ssh")

    def vm_logs(self, *, follow: bool = False) -> Iterator[str]:
        self._server_side("read the agent's log", "journalctl -u fc-agent" + (" -f" if follow else ""))

    def doctor(self) -> list[Check]:
        checks = [Check("context", True, f"'{self.context.name}': {self.context.url}, "
                        f"certificate pinned to {self.context.fingerprint}")]
        try:
            with self._agent() as agent:
                version = agent.health().get("version")
                checks.append(Check("agent", True, f"fc-agent {version} answers at {self.context.url} "
                                    "with the pinned certificate"))
                info = agent.info()
        except FcMacosError as exc:
            return [*checks, Check("agent", False, exc.message, exc.hint)]
        checks.append(Check("token", True, "fc-agent accepts the context's token"))
        checks.append(Check("version", version == __version__, f"fc-agent {version}, fc-macos {__version__}",
                            None if version == __version__ else f"on {self.context.host}: pip install -U fc-macos "
                            "and restart fc-agent"))
        missing = _missing_images(info)
        checks.append(Check("images", not missing, _images_detail(info),
                            _images_fix(self.context.host, info) if missing else None))
        return checks


class _RemoteSetup:
    """One ``setup`` run of a remote context: its steps and what they share."""

    def __init__(self, context: Context, agent: BlockingAgent, options: SetupOptions, progress: Progress) -> None:
        self.context = context
        self.agent = agent
        self.options = options
        self.progress = progress
        self.info: dict[str, Any] = {}

    def steps(self) -> list[Step]:
        hint = f"check the context with 'fc-macos --context {self.context.name} doctor'"
        return [
            Step("check-agent", f"checking fc-agent at {self.context.url}", self.check_agent, hint=hint),
            Step("install-firecracker", "installing Firecracker through fc-agent" if self.options.firecracker_bin
                 else "checking Firecracker on the agent's machine", self.install_firecracker),
            Step("install-images", "checking the guest images the agent serves", self.install_images),
        ]

    def check_agent(self) -> str:
        version = self.agent.health().get("version")
        self.info = self.agent.info()
        if version != __version__:
            self.progress.info(f"fc-agent {version} differs from fc-macos {__version__}: on {self.context.host}, "
                               "'pip install -U fc-macos' and restart fc-agent")
        return f"fc-agent {version} ({self.info.get('arch', '?')}) at {self.context.url}, certificate pinned, token accepted"

    def install_firecracker(self) -> str:
        binary = self.info.get("firecracker_bin", "?")
        if self.options.firecracker_bin is None:
            raise Skipped(f"fc-agent runs {binary} on {self.context.host}")
        given = Path(self.options.firecracker_bin).expanduser()
        if not given.is_file():
            raise SetupError("install-firecracker", f"{given} is not a file", hint="check --firecracker-bin")
        self._need_endpoint("install-firecracker", FIRECRACKER_PATH, f"cannot install {given}",
                            f"copy it to {self.context.host} and run fc-agent with --firecracker-bin PATH "
                            "(sudo fc-agent install-service --tls --firecracker-bin PATH ...)")
        answer = self.agent.run(lambda c: c.install_firecracker(given, self.progress))
        if answer.get("outcome") == "present":
            raise Skipped(f"fc-agent on {self.context.host} already runs {given} "
                          f"(as {answer.get('path')}: {answer.get('version')})")
        return f"{given} -> {answer.get('path')} on {self.context.host}: {answer.get('version')}; new microVMs run it"

    def install_images(self) -> str:
        files, manifest = given_images(self.options)
        if files:
            self._need_upload_endpoint(files)
            return self.agent.run(lambda c: self._upload(c, files, manifest))
        if self.options.skip_assets:
            raise Skipped("--skip-assets")
        missing = _missing_images(self.info)
        if missing:
            raise SetupError("install-images", f"fc-agent on {self.context.host} has no {', '.join(missing)}",
                             hint=_images_fix(self.context.host, self.info))
        raise Skipped(_images_detail(self.info))

    def _need_upload_endpoint(self, files: dict[str, Path]) -> None:
        self._need_endpoint("install-images", UPLOAD_PATH_PREFIX,
                            f"cannot install {', '.join(str(p) for p in files.values())}",
                            _images_fix(self.context.host, self.info))

    def _need_endpoint(self, step: str, prefix: str, what: str, instead: str) -> None:
        """SetupError for ``step`` unless the agent's /openapi.json has a path under ``prefix``."""
        openapi = self.agent.run(lambda c: c.openapi())
        paths = openapi.get("paths", {}) if isinstance(openapi, dict) else {}
        if not any(str(p).startswith(prefix) for p in paths):
            raise SetupError(step, f"{what}: fc-agent {self.info.get('version', '?')} on {self.context.host} has "
                             f"no such endpoint (no {prefix} in its /openapi.json)",
                             hint=f"upgrade fc-agent on {self.context.host} ('pip install -U fc-macos', restart it), "
                             "or " + instead)

    async def _upload(self, client: AgentClient, files: dict[str, Path], manifest: Path | None) -> str:
        """Upload ``files`` (by kind) as the image set's standard names; an initrd
        the agent has is removed when a kernel comes without one (it belongs to
        the old kernel), and so is a manifest that no longer describes the set."""
        changed = []
        for kind, path in files.items():
            answer = await client.upload_image(path, BY_KIND[kind], replace=True, progress=self.progress)
            if answer.get("outcome") != "present":
                changed.append(BY_KIND[kind])
        removed = []
        stale = [INITRD] if "initrd" not in files else []
        if manifest is not None:
            if (await client.upload_image(manifest, MANIFEST, replace=True)).get("outcome") != "present":
                changed.append(MANIFEST)
        elif changed or stale:
            stale.append(MANIFEST)
        for name in stale:
            try:
                await client.delete_image(name)
            except NotFoundError:
                continue
            removed.append(name)
        if not changed and not removed:
            raise Skipped(f"{', '.join(BY_KIND[k] for k in files)} up to date on {self.context.host}")
        return ", ".join([*(f"{name} uploaded" for name in changed), *(f"{name} removed" for name in removed)])


def _missing_images(info: dict[str, Any]) -> list[str]:
    images = info.get("images") or {}
    return [key for key in ("kernel", "rootfs") if not images.get(key)]


def _images_detail(info: dict[str, Any]) -> str:
    images = info.get("images") or {}
    return ", ".join(f"{key} {images.get(key) or 'missing'}" for key in IMAGE_KEYS)


def _images_fix(host: str, info: dict[str, Any]) -> str:
    where = (info.get("image_dirs") or ["/var/lib/fc-agent/images"])[0]
    return (f"put them on {host} in {where}: build them there with 'fc-macos images build --source debian "
            f"--out {where}', or copy a set made here: 'scp ./images/* {host}:{where}/'")


__all__ = ["RemoteProvider"]
