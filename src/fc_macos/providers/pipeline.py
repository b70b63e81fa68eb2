"""The one setup pipeline of every provider: named steps over a :class:`~fc_macos.providers.base.Host`.

``fc-macos setup`` runs the host's machine steps (``tart``: check-tart,
check-host, clone-vm, configure-vm, start-vm, wait-ip, wait-exec, check-kvm,
inspect-vm; ``local``: check-kvm), then the same steps for every provider:

    install-firecracker  --firecracker-bin; else the one installed; else 'firecracker' on the
                         machine's PATH; else the pinned release, downloaded here into
                         <home>/downloads/ (sha256-checked; --firecracker-mirror), see
                         :mod:`fc_macos.providers.firecracker_release`
    install-agent        fc-agent runnable on the machine (the host's own way)
    install-images       see :mod:`fc_macos.providers.image_install`
    write-token          a new token, unless the machine holds the saved one
    start-agent          (re)start fc-agent when something changed or it does not answer
    check-agent          /healthz and /v1/info from here, then save the endpoint

``fc-macos vm start`` runs the host's start steps, then start-agent and
check-agent. Both hold ``<home>/setup.lock``. The step engine is
:mod:`fc_macos.providers.setup_steps`.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from fc_macos._version import __version__
from fc_macos.agent_sync import PROBE_TIMEOUT_S, BlockingAgent
from fc_macos.config import AgentEndpoint
from fc_macos.errors import FcMacosError, SetupError
from fc_macos.progress import Progress
from fc_macos.providers import image_install
from fc_macos.providers.base import Host, Provider, SetupOptions
from fc_macos.providers.firecracker_release import install_release
from fc_macos.providers.setup_steps import Skipped, Step, run_steps, setup_lock

AGENT_TIMEOUT_S = 60.0

# $1 destination: copy the 'firecracker' on the machine's PATH there (exit 1 if
# there is none, or if it is the destination itself).
INSTALL_FROM_PATH = r"""
set -e
src=$(command -v firecracker) || exit 1
[ "$(readlink -f "$src")" != "$(readlink -f "$1")" ] || exit 1
mkdir -p "$(dirname "$1")"
install -m 0755 "$src" "$1.tmp"
mv -f "$1.tmp" "$1"
echo "$src"
"""


class SetupRun:
    """One run of the pipeline over ``host`` for ``provider`` (state shared by the steps)."""

    def __init__(self, provider: Provider, host: Host, options: SetupOptions, progress: Progress) -> None:
        self.provider = provider
        self.host = host
        self.options = options
        self.progress = progress
        self.token: str | None = None
        self.agent_changed = False  # something the agent uses was (re)installed: restart it

    # -- the shared steps ------------------------------------------------------------------

    def install_firecracker(self) -> str:
        dest = self.host.layout.firecracker
        given = self.options.firecracker_bin
        if given is not None:
            given = Path(given).expanduser()
            if not given.is_file():
                raise SetupError("install-firecracker", f"{given} is not a file", hint="check --firecracker-bin")
            if not self.host.put_file(given, dest, mode="0755"):
                raise Skipped(f"{dest} is {given}")
            self.agent_changed = True
            return f"{given} -> {dest}: {self._firecracker_version(dest)}"
        code, out, _ = self.host.run('"$1" --version 2>/dev/null | head -n1', dest, check=False)
        if code == 0 and out.strip() and not self.options.force:
            raise Skipped(f"{dest}: {out.strip()}")
        self.agent_changed = True
        code, out, _ = self.host.run(INSTALL_FROM_PATH, dest, check=False)
        if code == 0:
            return f"{out.strip()} (on PATH) -> {dest}"
        return install_release(self.host, dest, download_dir=self.provider.home / "downloads",
                               progress=self.progress, mirror=self.options.firecracker_mirror)

    def _firecracker_version(self, path: str) -> str:
        """What ``path --version`` says; SetupError when it is not a Firecracker that runs here."""
        code, out, err = self.host.run('"$1" --version', path, check=False)
        first = out.strip().splitlines()[0] if out.strip() else ""
        if code != 0 or not first.startswith("Firecracker"):
            raise SetupError("install-firecracker", f"{path} does not run as Firecracker ('--version' said: "
                             f"{(first or err.strip())[-300:] or 'nothing'}, exit {code})",
                             hint=f"give --firecracker-bin a Firecracker binary built for {self.host.arch()}")
        return first

    def install_agent(self) -> str:
        detail = self.host.install_agent(self.options.force)  # Skipped passes through
        self.agent_changed = True
        return detail

    def install_images(self) -> str:
        return image_install.install_images(self.host, self.options, self.progress)

    def write_token(self) -> str:
        token_file = self.host.layout.token_file
        saved = AgentEndpoint.saved(self.provider.home)
        if saved and not self.options.force:
            current = self.host.read_secret(token_file)
            if current and secrets.compare_digest(current, saved.token):
                self.token = saved.token
                raise Skipped(f"{token_file} holds the saved token")
        self.token = secrets.token_urlsafe(32)
        self.host.put_secret(token_file, self.token + "\n")
        self.agent_changed = True
        return f"new token in {token_file} (0600)"

    def start_agent(self) -> str:
        url = self.host.agent_url()
        if not self.agent_changed and self._current_agent_answers(url):
            raise Skipped(f"fc-agent {__version__} answers at {url} with the saved token")
        how = self.host.start_agent()
        self._wait_agent()
        return f"{how}; listening at {self.host.agent_url()}"

    def check_agent(self) -> str:
        assert self.token is not None
        url = self.host.agent_url()
        with BlockingAgent(url, self.token, timeout=PROBE_TIMEOUT_S) as agent:
            health = agent.health()
            info = agent.info()
        endpoint = AgentEndpoint(url, self.token, provider=self.provider.name)
        if AgentEndpoint.saved(self.provider.home) != endpoint:
            endpoint.save(self.provider.home)
        return f"fc-agent {health.get('version', '?')} ({info.get('arch', '?')}) at {url}; saved in agent.json"

    # -- helpers ---------------------------------------------------------------------------

    def _current_agent_answers(self, url: str) -> bool:
        """The agent at ``url`` takes our token and runs this version of fc-macos."""
        if not self.token or self.host.agent_alive() is False:
            return False
        try:
            with BlockingAgent(url, self.token, timeout=PROBE_TIMEOUT_S) as agent:
                agent.info()
                return agent.health().get("version") == __version__
        except FcMacosError:
            return False

    def _wait_agent(self) -> None:
        deadline = time.monotonic() + AGENT_TIMEOUT_S
        with BlockingAgent(self.host.agent_url(), self.token, timeout=PROBE_TIMEOUT_S) as agent:
            while not agent.answers():
                if self.host.agent_alive() is False:
                    raise SetupError("start-agent", f"fc-agent exited at once:\n{self.host.agent_log_tail()}",
                                     hint="fix the cause shown in its log, then run 'fc-macos setup' again")
                if time.monotonic() > deadline:
                    raise SetupError("start-agent", f"fc-agent does not answer at {agent.url} within "
                                     f"{AGENT_TIMEOUT_S:.0f} s:\n{self.host.agent_log_tail()}",
                                     hint="see the whole log with 'fc-macos vm logs'")
                time.sleep(0.2)

    # -- step lists ------------------------------------------------------------------------

    def agent_steps(self) -> list[Step]:
        return [
            Step("start-agent", "starting fc-agent", self.start_agent),
            Step("check-agent", "checking that fc-agent answers from here", self.check_agent),
        ]

    def setup_steps(self) -> list[Step]:
        return [
            *self.host.machine_steps(),
            Step("install-firecracker", "installing Firecracker", self.install_firecracker),
            Step("install-agent", "installing fc-agent", self.install_agent),
            Step("install-images", "installing guest images", self.install_images),
            Step("write-token", "writing the agent's token", self.write_token),
            *self.agent_steps(),
        ]


def run_setup(provider: Provider, options: SetupOptions, progress: Progress) -> AgentEndpoint:
    """``fc-macos setup`` for ``provider`` (see the module docstring)."""
    with setup_lock(provider.home):
        host = provider.open_host(options, progress)
        try:
            run = SetupRun(provider, host, options, progress)
            run_steps(run.setup_steps(), progress, host.cleanups)
        finally:
            host.close()
    provider.config.provider = provider.name
    return AgentEndpoint.load(provider.home)


def run_start(provider: Provider, progress: Progress) -> None:
    """``fc-macos vm start``: the host's start steps, then start-agent and check-agent."""
    endpoint = provider.endpoint()
    with setup_lock(provider.home):
        host = provider.open_host(SetupOptions(), progress)
        try:
            run = SetupRun(provider, host, SetupOptions(), progress)
            run.token = endpoint.token
            run_steps([*host.start_steps(), *run.agent_steps()], progress, host.cleanups)
        finally:
            host.close()
