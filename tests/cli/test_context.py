"""``fc-macos context ...`` and ``--context``/``FC_MACOS_CONTEXT`` against real fc-agent
processes in a network namespace playing the remote host (tests/helpers/remote_host.py):
pinning with and without --fingerprint, a certificate that is not the pinned one,
HTTP and HTTPS mixed up, a wrong token, a host that cannot be reached. The
commands run in-process (CliRunner); each refusal must exit non-zero with a message
that says what is wrong and none of aiohttp's internals."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fc_macos.agent.wire import MicroVMSpec
from fc_macos.agent_sync import BlockingAgent
from fc_macos.cli.main import cli
from fc_macos.contexts import Context, ContextStore
from fc_macos.errors import AgentTLSError
from tests.cli.terminal import Terminal
from tests.helpers.agent import TEST_VMM
from tests.helpers.remote_host import RemoteAgent, RemoteHost, needs_netns, remote_host

pytestmark = [needs_netns, pytest.mark.timeout(300)]

LEAKS = ("ssl:default", "Connect call failed", "ClientConnector", "SSLError", "Traceback", "ssl.SSLContext")


@pytest.fixture(scope="module")
def host() -> Iterator[RemoteHost]:
    with remote_host() as made:
        yield made


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fct-tls-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def agent(host: RemoteHost, work: Path) -> Iterator[RemoteAgent]:
    """fc-agent --tls on the remote host."""
    with host.agent(work / "a", "--tls") as made:
        yield made


@pytest.fixture(scope="module")
def other_agent(host: RemoteHost, work: Path) -> Iterator[RemoteAgent]:
    """A second fc-agent --tls there, with a certificate of its own."""
    with host.agent(work / "b", "--tls", port=8444) as made:
        yield made


@pytest.fixture(scope="module")
def plain_agent(host: RemoteHost, work: Path) -> Iterator[RemoteAgent]:
    """An fc-agent serving plain HTTP there."""
    with host.agent(work / "p", port=8080) as made:
        yield made


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def invoke(home: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env={"FC_MACOS_CONTEXT": None, **(env or {})},
                              input=stdin)


def add(home: Path, agent: RemoteAgent, name: str = "lab", *more: str) -> Result:
    return invoke(home, "context", "add", name, "--url", agent.url, "--token-file", str(agent.token_file), *more)


def assert_refused(result: Result, *words: str, exit_code: int = 1) -> None:
    assert result.exit_code == exit_code, result.output
    for word in words:
        assert word in result.output, result.output
    for leak in LEAKS:
        assert leak not in result.output, result.output
    assert "Hint: " in result.output


# -- adding a context ---------------------------------------------------------------------------


def test_add_with_the_fingerprint_pins_it_and_commands_run_over_tls(home: Path, agent: RemoteAgent) -> None:
    result = add(home, agent, "lab", "--fingerprint", agent.fingerprint or "", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["fingerprint"] == agent.fingerprint
    saved = ContextStore(home).get("lab")
    assert (saved.url, saved.token, saved.fingerprint) == (agent.url, agent.token, agent.fingerprint)
    assert (home / "contexts.json").stat().st_mode & 0o777 == 0o600
    listed = invoke(home, "--context", "lab", "microvm", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output) == []
    shown = json.loads(invoke(home, "context", "list", "--json").output)
    assert shown["contexts"] == [{"name": "lab", "url": agent.url, "fingerprint": agent.fingerprint,
                                  "current": False, "active": False}]
    assert agent.token not in invoke(home, "context", "list").output


def test_the_token_can_come_from_stdin(home: Path, agent: RemoteAgent) -> None:
    result = invoke(home, "context", "add", "lab", "--url", agent.url, "--token-file", "-",
                    "--fingerprint", agent.fingerprint or "", stdin=agent.token + "\n")
    assert result.exit_code == 0, result.output
    assert ContextStore(home).get("lab").token == agent.token
    empty = invoke(home, "context", "add", "lab2", "--url", agent.url, "--token-file", "-",
                   "--fingerprint", agent.fingerprint or "", stdin="")
    assert_refused(empty, "does not hold a token", exit_code=2)


def test_the_dashboard_attaches_through_the_same_context(home: Path, agent: RemoteAgent) -> None:
    from fc_macos.cli.common import AppState
    from fc_macos.cli.dashboard import attach_command

    ContextStore(home).add(Context("lab", agent.url, agent.token, agent.fingerprint or ""))
    argv = attach_command(AppState(home, context_name="lab"), "web")
    assert argv[argv.index("--context") + 1] == "lab" and "--provider" not in argv
    assert "--provider" in attach_command(AppState(home), "web")


def test_add_without_fingerprint_shows_it_and_asks(home: Path, agent: RemoteAgent) -> None:
    argv = [sys.executable, "-m", "fc_macos.cli.main", "--home", str(home), "context", "add", "lab",
            "--url", agent.url, "--token-file", str(agent.token_file)]
    for answer, code in ((b"n", 2), (b"y", 0)):
        terminal = Terminal(argv)  # a real terminal to ask on
        try:
            terminal.read_until(str(agent.fingerprint).encode())
            terminal.read_until(b"Pin it and add the context? [y/N]")
            terminal.type(answer + b"\r")
            assert terminal.wait() == code, terminal.output.decode(errors="replace")
        finally:
            terminal.close()
        if code:
            assert not ContextStore(home).all()
    assert ContextStore(home).get("lab").fingerprint == agent.fingerprint


def test_add_without_fingerprint_under_yes_fails_naming_it(home: Path, agent: RemoteAgent) -> None:
    for extra in (("--yes",), ()):  # CliRunner's stdin is no terminal
        result = add(home, agent, "lab", *extra)
        assert_refused(result, str(agent.fingerprint), "nothing was saved", exit_code=2)
        assert f"--fingerprint {agent.fingerprint}" in result.output
    assert not ContextStore(home).all()


def test_add_with_another_certificates_fingerprint_is_refused(
        home: Path, agent: RemoteAgent, other_agent: RemoteAgent) -> None:
    assert agent.fingerprint != other_agent.fingerprint
    result = add(home, agent, "lab", "--fingerprint", other_agent.fingerprint or "")
    assert_refused(result, str(agent.fingerprint), str(other_agent.fingerprint), "nothing was saved")
    assert not ContextStore(home).all()


def test_a_certificate_that_is_not_the_pinned_one_stops_every_command(
        home: Path, agent: RemoteAgent, other_agent: RemoteAgent) -> None:
    # The context pins agent's certificate, but other_agent answers at its URL.
    ContextStore(home).add(Context("lab", other_agent.url, other_agent.token, agent.fingerprint or ""))
    for command in (("microvm", "list"), ("exec", "--name", "x", "--", "true")):
        result = invoke(home, "--context", "lab", *command)
        assert_refused(result, "is not the pinned one", str(other_agent.fingerprint), "fc-agent fingerprint")


def test_a_bad_fingerprint_is_a_usage_error(home: Path, agent: RemoteAgent) -> None:
    hexed = "ab:" * 31 + "ab"
    result = add(home, agent, "lab", "--fingerprint", hexed)
    assert_refused(result, "not a certificate fingerprint", "SHA256:", exit_code=2)


# -- HTTP and HTTPS mixed up --------------------------------------------------------------------


def test_https_to_a_plain_agent_is_refused(home: Path, agent: RemoteAgent, plain_agent: RemoteAgent) -> None:
    https = plain_agent.url.replace("http://", "https://")
    result = invoke(home, "context", "add", "lab", "--url", https, "--token-file", str(plain_agent.token_file),
                    "--fingerprint", agent.fingerprint or "")
    assert_refused(result, "does not speak TLS", "fc-agent --tls")
    # A saved context whose agent went back to plain HTTP:
    ContextStore(home).add(Context("lab", https, plain_agent.token, agent.fingerprint or ""))
    listed = invoke(home, "--context", "lab", "microvm", "list")
    assert_refused(listed, "does not speak HTTPS", "fc-agent --tls")


def test_plain_http_to_a_tls_agent_is_refused(home: Path, agent: RemoteAgent) -> None:
    http = agent.url.replace("https://", "http://")
    result = invoke(home, "context", "add", "lab", "--url", http, "--token-file", str(agent.token_file))
    assert_refused(result, "plain HTTP", "--tls", "https://", exit_code=2)
    # The Python API (or an agent.json) with a plain URL: the agent's certificate is named.
    with BlockingAgent(http, agent.token) as client, pytest.raises(AgentTLSError) as caught:
        client.info()
    assert "serves HTTPS" in caught.value.message and str(agent.fingerprint) in caught.value.message
    assert caught.value.hint and agent.url in caught.value.hint


# -- token and reachability ---------------------------------------------------------------------


def test_a_wrong_token_is_refused(home: Path, agent: RemoteAgent, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n")
    result = invoke(home, "context", "add", "lab", "--url", agent.url, "--token-file", str(wrong),
                    "--fingerprint", agent.fingerprint or "")
    assert_refused(result, "refuses the token", str(wrong), "nothing was saved")
    assert not ContextStore(home).all()
    ContextStore(home).add(Context("lab", agent.url, "not-the-token", agent.fingerprint or ""))
    listed = invoke(home, "--context", "lab", "microvm", "list")
    assert_refused(listed, "refused the token of context 'lab'", "context add lab")


def test_an_unreachable_host_is_refused_in_plain_words(home: Path, host: RemoteHost, agent: RemoteAgent) -> None:
    nobody = f"https://{host.nobody}:8443"
    result = invoke(home, "context", "add", "lab", "--url", nobody, "--token-file", str(agent.token_file),
                    "--fingerprint", agent.fingerprint or "")
    assert_refused(result, f"cannot reach {host.nobody}:8443")
    closed = f"https://{host.address}:9"
    ContextStore(home).add(Context("gone", nobody, agent.token, agent.fingerprint or ""))
    ContextStore(home).add(Context("closed", closed, agent.token, agent.fingerprint or ""))
    gone = invoke(home, "--context", "gone", "microvm", "list")
    assert_refused(gone, f"cannot reach fc-agent at {nobody}", "context 'gone'")
    refused = invoke(home, "--context", "closed", "microvm", "list")
    assert_refused(refused, f"cannot reach fc-agent at {closed}: connection refused")
    start = invoke(home, "--context", "closed", "vm", "start")
    assert_refused(start, "does not start a remote agent", "connection refused", "systemctl start fc-agent")


# -- choosing the context -----------------------------------------------------------------------


def test_context_flag_env_and_use_choose_the_agent(home: Path, agent: RemoteAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    assert add(home, agent, "lab", "--fingerprint", agent.fingerprint or "").exit_code == 0
    not_set_up = invoke(home, "microvm", "list")  # the local provider's own agent: none here
    assert not_set_up.exit_code == 1 and "not set up" in not_set_up.output
    by_env = invoke(home, "microvm", "list", "--json", env={"FC_MACOS_CONTEXT": "lab"})
    assert by_env.exit_code == 0 and json.loads(by_env.output) == [], by_env.output
    unknown = invoke(home, "microvm", "list", env={"FC_MACOS_CONTEXT": "nope"})
    assert_refused(unknown, "no context named 'nope'", exit_code=1)
    assert invoke(home, "context", "use", "lab").exit_code == 0
    status = json.loads(invoke(home, "vm", "status", "--json").output)
    assert (status["provider"], status["agent_url"], status["agent_ok"]) == ("remote", agent.url, True)
    assert json.loads(invoke(home, "context", "list", "--json").output)["active"] == "lab"
    back = invoke(home, "--context", "default", "microvm", "list")  # the flag wins over 'use'
    assert back.exit_code == 1 and "not set up" in back.output
    both = invoke(home, "--provider", "local", "--context", "lab", "microvm", "list")
    assert_refused(both, "--provider local and --context lab", exit_code=2)
    refused = invoke(home, "vm", "stop")
    assert_refused(refused, "does not stop the agent of context 'lab'", "systemctl stop fc-agent")
    assert_refused(invoke(home, "vm", "logs"), "does not read the agent's log", "journalctl -u fc-agent")
    assert invoke(home, "vm", "start").exit_code == 0  # it answers: nothing to do
    removed = invoke(home, "context", "rm", "lab")
    assert removed.exit_code == 0 and "provider's own agent" in removed.output
    assert ContextStore(home).current_name() is None


def test_setup_and_doctor_on_a_context_check_the_agent_upload_images_and_say_what_is_missing(
        home: Path, agent: RemoteAgent, tmp_path: Path) -> None:
    assert add(home, agent, "lab", "--fingerprint", agent.fingerprint or "").exit_code == 0
    setup = invoke(home, "--context", "lab", "setup")
    assert "certificate pinned, token accepted" in setup.output, setup.output
    assert_refused(setup, "setup step 'install-images' failed", "has no kernel, rootfs", "images build")
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\0")
    upload = invoke(home, "--context", "lab", "setup", "--kernel", str(kernel))  # uploaded through the agent
    assert upload.exit_code == 0 and "vmlinux uploaded" in upload.output, upload.output
    again = invoke(home, "--context", "lab", "setup", "--kernel", str(kernel))
    assert again.exit_code == 0 and "vmlinux up to date" in again.output, again.output
    doctor = invoke(home, "--context", "lab", "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(doctor.output)["checks"]}
    assert checks["agent"]["ok"] and checks["token"]["ok"] and not checks["images"]["ok"]  # still no rootfs
    assert "kernel vmlinux" in checks["images"]["detail"] or "vmlinux" in checks["images"]["detail"], checks


def test_setup_on_a_context_installs_firecracker_through_the_agent_and_new_microvms_run_it(
        home: Path, host: RemoteHost, work: Path, tmp_path: Path) -> None:
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\nexit 0\n")
    silent.chmod(0o755)
    copy = tmp_path / "firecracker"  # the test VMM, as other content than the agent's --firecracker-bin
    copy.write_bytes(TEST_VMM.read_bytes() + b"\n# an installed copy\n")
    (tmp_path / "vmlinux").write_bytes(b"\0")
    (tmp_path / "rootfs.ext4").write_bytes(b"\0" * 4096)
    images = ("--kernel", str(tmp_path / "vmlinux"), "--rootfs", str(tmp_path / "rootfs.ext4"))
    with host.agent(work / "f", "--tls", port=8445) as fc_agent:
        assert add(home, fc_agent, "lab", "--fingerprint", fc_agent.fingerprint or "").exit_code == 0
        target = fc_agent.state_dir / "bin" / "firecracker"
        refused = invoke(home, "--context", "lab", "setup", "--firecracker-bin", str(silent), *images)
        assert_refused(refused, "setup step 'install-firecracker' failed", "does not run as Firecracker",
                       "nothing was replaced", "architecture")
        assert not target.exists()
        installed = invoke(home, "--context", "lab", "setup", "--firecracker-bin", str(copy), *images)
        assert installed.exit_code == 0, installed.output
        assert f"-> {target} on {host.address}: Firecracker v1.16.1" in installed.output, installed.output
        assert target.read_bytes() == copy.read_bytes()
        again = invoke(home, "--context", "lab", "setup", "--firecracker-bin", str(copy), *images)
        assert again.exit_code == 0 and f"already runs {copy} (as {target}" in again.output, again.output
        with BlockingAgent.from_endpoint(ContextStore(home).get("lab").endpoint(), home=home) as client:
            assert client.info()["firecracker_bin"] == str(target)
            spec = MicroVMSpec.from_dict({"name": "fresh", "start": False})
            created = client.run(lambda c: c.create_microvm(spec))
            assert created.pid is not None
            assert str(target).encode() in Path(f"/proc/{created.pid}/cmdline").read_bytes()
            client.run(lambda c: c.stop_microvm("fresh", force=True))


def test_the_python_api_connects_to_a_context(home: Path, agent: RemoteAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    import fc_macos

    assert add(home, agent, "lab", "--fingerprint", agent.fingerprint or "").exit_code == 0
    with fc_macos.connect(home=home, context="lab") as fc:
        assert fc.list() == []
    monkeypatch.setenv("FC_MACOS_CONTEXT", "lab")
    with fc_macos.connect(home=home) as fc:
        assert fc.list() == []
