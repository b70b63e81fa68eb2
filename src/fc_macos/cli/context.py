"""``fc-macos context ...``: named fc-agents on other machines, over HTTPS with a pinned certificate."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fc_macos.cli.common import AppState, emit, json_option, pass_state, table


@click.group("context")
def context_group() -> None:
    """Agents on other machines: a Linux server with KVM running 'fc-agent --tls'.

    A context is a URL, a token and the certificate's fingerprint, which is
    pinned like SSH's known hosts: no other certificate is accepted for it.
    Any command runs against one with 'fc-macos --context NAME ...' or
    FC_MACOS_CONTEXT=NAME; 'context use NAME' makes it the default
    ('context use default' goes back to the provider's own agent).

    \b
    On the server (prints the fingerprint; the token is /etc/fc-agent/token):
      pip install fc-macos && sudo fc-agent install-service --tls --listen 0.0.0.0:8443
    Here:
      scp server:/etc/fc-agent/token ./lab.token
      fc-macos context add lab --url https://server:8443 --token-file lab.token --fingerprint SHA256:...
      fc-macos --context lab microvm list
      fc-macos context use lab
    """


@context_group.command("add")
@click.argument("name")
@click.option("--url", required=True, metavar="https://HOST:PORT", help="Where fc-agent --tls listens.")
@click.option("--token-file", required=True, type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="A copy of the agent's token file ('-': read the token from stdin).")
@click.option("--fingerprint", metavar="SHA256:...",
              help="The certificate's fingerprint, as fc-agent prints it. Without it the one the server "
              "shows is printed and you are asked (refused with --yes or without a terminal).")
@click.option("--force", is_flag=True, help="Replace a context of that name.")
@click.option("--yes", "-y", is_flag=True, help="Never ask (then --fingerprint is needed).")
@json_option
@pass_state
def add_cmd(state: AppState, name: str, url: str, token_file: Path, fingerprint: str | None, force: bool,
            yes: bool) -> None:
    """Add context NAME: check the agent at --url (its certificate, then the
    token) and save it in contexts.json (0600). Nothing is saved on failure.

    \b
    Examples:
      fc-macos context add lab --url https://lab:8443 --token-file lab.token --fingerprint SHA256:...
      fc-macos context add lab --url https://lab:8443 --token-file lab.token   # shows it, asks
    """
    from fc_macos import contexts, tls_pin
    from fc_macos.agent_sync import BlockingAgent
    from fc_macos.errors import AgentAuthError, AgentTLSError, UsageError

    contexts.check_name(name)
    host, port = contexts.check_url(url)
    url = f"https://{host if ':' not in host else f'[{host}]'}:{port}"
    token = _read_token(token_file)
    store = contexts.ContextStore(state.home)
    if not force:
        store.check_free(name)
    seen = tls_pin.fingerprint_of(tls_pin.peer_certificate(host, port))
    if fingerprint is not None:
        pinned = tls_pin.normalize(fingerprint)
        if pinned != seen:
            raise AgentTLSError(
                f"the certificate of {host}:{port} is {seen}, not {pinned} (--fingerprint): another machine may be "
                "answering there (or intercepting), or the agent made a new certificate; nothing was saved",
                hint="on that host, 'fc-agent fingerprint' prints the agent's own: pass that one",
                code="certificate_mismatch")
    elif yes or not sys.stdin.isatty():
        raise UsageError(f"the certificate of {host}:{port} is {seen}; it is not pinned yet "
                         f"({'--yes' if yes else 'no terminal to ask on'}), so nothing was saved",
                         hint=f"check it on that host with 'fc-agent fingerprint', then add --fingerprint {seen}")
    else:
        click.echo(f"The certificate of {host}:{port} is not known yet. Its fingerprint is\n  {seen}\n"
                   "Compare it with what 'fc-agent fingerprint' prints on that host.", err=True)
        if not click.confirm("Pin it and add the context?", default=False, err=True):
            raise UsageError("not confirmed: nothing was saved", hint=f"pass --fingerprint {seen} once checked")
        pinned = seen
    context = contexts.Context(name, url, token, pinned)
    with BlockingAgent.from_endpoint(context.endpoint(), timeout=tls_pin.PROBE_TIMEOUT_S, home=state.home) as agent:
        version = agent.health().get("version")
        try:
            agent.info()  # checks the token
        except AgentAuthError as exc:
            raise AgentAuthError(f"the agent at {url} refuses the token in {token_file}; nothing was saved",
                                 hint="copy the agent's token file again (/etc/fc-agent/token on its host, "
                                 "or the --token-file it runs with) and name that copy") from exc
    store.add(context, replace=force)
    emit(state, {**context.public(), "agent_version": version},
         f"added context '{name}': fc-agent {version} at {url}, certificate {pinned} pinned\n"
         f"use it with 'fc-macos --context {name} ...' or make it the default: 'fc-macos context use {name}'")


def _read_token(path: Path) -> str:
    from fc_macos.errors import UsageError

    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read the token file {path}: {exc.strerror or exc}",
                         hint="copy the agent's token file (/etc/fc-agent/token on its host) and name the copy") from exc
    token = text.strip()
    if not token or any(c.isspace() for c in token):
        raise UsageError(f"{path} does not hold a token", hint="it must hold the agent's token file, unchanged")
    return token


@context_group.command("list")
@json_option
@pass_state
def list_cmd(state: AppState) -> None:
    """The contexts, and which one commands use ('*'). Tokens are never shown.

    \b
    Example:
      fc-macos context list --json
    """
    from fc_macos import contexts

    store = contexts.ContextStore(state.home)
    current = store.current_name()
    active = state.context_name or state.context_env or current or contexts.DEFAULT
    items = [{**c.public(), "current": c.name == current, "active": c.name == active} for c in store.all()]
    rows = [["*" if i["active"] else "", contexts.DEFAULT, f"the {state.config.provider} provider's own agent", ""]
            for i in [{"active": active == contexts.DEFAULT}]]
    rows += [["*" if i["active"] else "", i["name"], i["url"], i["fingerprint"]] for i in items]
    emit(state, {"current": current, "active": active, "contexts": items},
         table(rows, ["", "NAME", "URL", "FINGERPRINT"]))


@context_group.command("use")
@click.argument("name")
@json_option
@pass_state
def use_cmd(state: AppState, name: str) -> None:
    """Make NAME the context every command uses ('default': the provider's own agent).

    --context and FC_MACOS_CONTEXT still win for one command.

    \b
    Examples:
      fc-macos context use lab
      fc-macos context use default
    """
    from fc_macos import contexts

    contexts.ContextStore(state.home).use(name)
    default = name == contexts.DEFAULT
    emit(state, {"current": None if default else name},
         "commands now use the provider's own agent" if default else f"commands now use context '{name}'")


@context_group.command("rm")
@click.argument("name")
@json_option
@pass_state
def rm_cmd(state: AppState, name: str) -> None:
    """Forget context NAME (its token and pin). The agent itself is untouched.

    \b
    Example:
      fc-macos context rm lab
    """
    from fc_macos import contexts

    was_current = contexts.ContextStore(state.home).remove(name)
    note = "; commands now use the provider's own agent" if was_current else ""
    emit(state, {"removed": name, "was_current": was_current}, f"removed context '{name}'{note}")
