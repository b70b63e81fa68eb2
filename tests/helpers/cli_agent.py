"""CLI tests against a real fc-agent: the agent (:func:`tests.helpers.agent.agent_process`,
with the test VMM and the offline guest images) with its endpoint saved in a home
directory, and the CLI invoked in-process on that home.

    from tests.helpers.cli_agent import agent_home, invoke
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner, Result

from fc_macos.cli.main import cli
from fc_macos.config import AgentEndpoint
from tests.helpers.agent import agent_process
from tests.helpers.guest_images import build_test_images


@contextmanager
def agent_home(work_dir: Path, image_dirs: tuple[Path, ...] | None = None) -> Iterator[Path]:
    """A real fc-agent (--no-nat) serving ``image_dirs`` (default: the offline
    guest images), its endpoint saved in ``<work_dir>/home`` (yielded); stopped
    at the end."""
    if image_dirs is None:
        image_dirs = (build_test_images().kernel.parent,)
    with agent_process(work_dir, image_dirs) as agent:
        AgentEndpoint(agent.url, agent.token).save(work_dir / "home")
        yield work_dir / "home"


def invoke(home: Path, *args: str) -> Result:
    """``fc-macos --home HOME ARGS...`` in-process."""
    return CliRunner().invoke(cli, ["--home", str(home), *args])
