"""The dashboard's modal screens: delete confirmation, the new-microVM form, help."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

from fc_macos.agent.wire import MicroVMSpec
from fc_macos.errors import FcMacosError

HELP = """\
fc-macos dashboard: the Linux VM, its agent and the microVMs, refreshed every second.

  Up/Down   select a microVM
  Enter     attach its serial console (the dashboard steps aside; Ctrl+] comes back)
  l         follow its console log in a pane below (l again closes it)
  s         stop it
  p         pause it, or resume it when paused
  d         delete it and its files (asks first; stops it if it runs)
  n         a new microVM (name, vCPUs, memory; boot it or only configure it)
  /         filter by name or state (Enter keeps the filter, Escape clears it)
  ?         this help
  q         quit (the terminal is left as it was)

CPU % is the last second's use of one core; RSS the VMM's resident memory.
When the agent does not answer, the screen says so and keeps the last figures.

Press any key to close."""


class ConfirmDelete(ModalScreen[bool]):
    """Asks before deleting; dismisses with True only for y / the Delete button."""

    BINDINGS = [Binding("y", "answer(True)", "Yes, delete"), Binding("n,escape", "answer(False)", "No, keep it")]

    def __init__(self, name: str, state: str) -> None:
        super().__init__()
        self.vm_name = name
        self.vm_state = state

    def compose(self) -> ComposeResult:
        stop = " It runs: it is stopped first." if self.vm_state not in ("stopped", "failed", "damaged") else ""
        with Vertical(id="dialog"):
            yield Label(f"Delete microVM {self.vm_name} and its files?{stop}", id="question")
            yield Label("y: delete   n / Escape: keep it")
            with Horizontal(id="buttons"):
                yield Button("Delete", variant="error", id="yes")
                yield Button("Keep", id="no")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class NewMicroVM(ModalScreen["MicroVMSpec | None"]):
    """A small form for a new microVM; dismisses with its spec, or None (Escape)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("enter", "submit", "Create", priority=True)]
    AUTO_FOCUS = "#name"

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("New microVM: Tab moves, Space ticks, Enter creates it, Escape cancels")
            with Grid(id="form"):
                yield Label("name")
                yield Input(placeholder="empty: microvm-N", id="name")
                yield Label("vCPUs")
                yield Input(value="1", id="vcpus", type="integer")
                yield Label("memory MiB")
                yield Input(value="256", id="memory", type="integer")
            yield Checkbox("boot it now (off: only configure it)", value=True, id="start")
            yield Checkbox("network (eth0 on its own TAP and /30)", value=False, id="network")
            yield Static("", id="error")

    def _spec(self) -> MicroVMSpec:
        fields: dict[str, object] = {
            "vcpus": int(self.query_one("#vcpus", Input).value or "1"),
            "memory_mib": int(self.query_one("#memory", Input).value or "256"),
            "start": self.query_one("#start", Checkbox).value,
            "network": self.query_one("#network", Checkbox).value,
        }
        name = self.query_one("#name", Input).value.strip()
        if name:
            fields["name"] = name
        return MicroVMSpec.from_dict(fields)

    def _submit(self) -> None:
        try:
            spec = self._spec()
        except (FcMacosError, ValueError) as exc:
            message = exc.message if isinstance(exc, FcMacosError) else str(exc)
            self.query_one("#error", Static).update(f"[red]{message}[/]")
            return
        self.dismiss(spec)

    def action_submit(self) -> None:
        self._submit()

    def action_cancel(self) -> None:
        self.dismiss(None)


class Help(ModalScreen[None]):
    """The keys; any key closes it."""

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(HELP, markup=False)

    def on_key(self, event: events.Key) -> None:
        event.stop()
        self.dismiss(None)
