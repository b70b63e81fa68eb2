"""The Textual application of ``fc-macos dashboard``.

The screen is drawn from the source's last :class:`Snapshot` once a second;
polls run as workers beside it (one at a time each), so a slow or dead agent
never holds the screen: it reads "UNREACHABLE" and the data's age instead.
Actions run as workers too and report through notifications (errors with
their hint). Enter suspends the app and runs ``fc-macos microvm shell`` in
this terminal; the app comes back when that ends (Ctrl+]).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Awaitable, Callable, Sequence

from rich.text import Text
from textual.app import App, ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.coordinate import Coordinate
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Log, Static
from textual.worker import Worker

from fc_macos.agent.wire import CREATED, DAMAGED, FAILED, PAUSED, RUNNING, STARTING, STOPPED, STOPPING, MicroVMInfo, MicroVMSpec
from fc_macos.cli.dashboard import model
from fc_macos.cli.dashboard.screens import ConfirmDelete, Help, NewMicroVM
from fc_macos.cli.dashboard.source import DashboardSource
from fc_macos.errors import FcMacosError

REFRESH_S = 1.0
VM_REFRESH_S = 5.0
STATE_STYLES = {RUNNING: "green", PAUSED: "yellow", CREATED: "cyan", STARTING: "cyan",
                STOPPING: "yellow", STOPPED: "dim", FAILED: "bold red", DAMAGED: "bold red"}
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-Z\\-_]")


def plain(text: str) -> str:
    """Console output without terminal control sequences and carriage returns."""
    return _ANSI.sub("", text).replace("\r", "")


class MicroVMTable(DataTable[Text]):
    """The microVM table; Enter attaches the selected microVM's console."""

    BINDINGS = [Binding("enter", "app.attach", "Attach console")]


class DashboardApp(App[None]):
    """``attach_argv(name)`` is the command that attaches this terminal to a
    microVM's console (``fc-macos microvm shell --name NAME``)."""

    TITLE = "fc-macos dashboard"
    ENABLE_COMMAND_PALETTE = False  # the footer shows this tool's keys only
    CSS = """
    #panels { height: 9; }
    .panel { width: 1fr; height: 100%; border: round $accent; padding: 0 1; }
    #alert { display: none; color: $error; text-style: bold; padding: 0 1; }
    #alert.shown { display: block; }
    #filter { display: none; }
    #filter.shown { display: block; }
    #table { height: 1fr; border: round $accent; }
    #log { height: 12; display: none; border: round $secondary; }
    #log.shown { display: block; }
    ModalScreen { align: center middle; }
    #dialog { width: 96; max-width: 100%; height: auto; border: thick $accent; background: $surface; padding: 1 2; }
    #form { grid-size: 2; grid-columns: 14 1fr; height: auto; }
    #form Label { padding: 1 0; }
    #buttons { height: auto; margin-top: 1; }
    #buttons Button { margin-right: 2; }
    """
    BINDINGS = [
        Binding("l", "log", "Log"),
        Binding("s", "stop", "Stop"),
        Binding("p", "pause", "Pause/resume"),
        Binding("d", "delete", "Delete"),
        Binding("n", "new", "New"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("escape", "escape", "Clear", show=False),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit_now", "Quit", show=False),
    ]

    #: The dashboard's own keys: off while a dialog (confirmation, form, help) is open, so a
    #: key meant for the dialog never stops, deletes or quits (Ctrl+C still quits).
    MAIN_ACTIONS = frozenset({"log", "stop", "pause", "delete", "new", "filter", "escape", "help", "attach", "quit"})

    def __init__(self, source: DashboardSource, attach_argv: Callable[[str], Sequence[str]],
                 *, refresh_s: float = REFRESH_S, vm_refresh_s: float = VM_REFRESH_S) -> None:
        super().__init__()
        self.source = source
        self.attach_argv = attach_argv
        self.refresh_s = refresh_s
        self.vm_refresh_s = vm_refresh_s
        self.filter_text = ""
        self.log_name: str | None = None
        self._polls: dict[str, Worker[None]] = {}

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.MAIN_ACTIONS and isinstance(self.screen, ModalScreen):
            return False
        return True

    # -- layout and refresh -------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="panels"):
            yield Static(id="vm", classes="panel")
            yield Static(id="agent", classes="panel")
        yield Static(id="alert")
        yield Input(placeholder="filter: part of a name, or a state (Enter keeps it, Escape clears it)", id="filter")
        yield MicroVMTable(id="table", cursor_type="row", zebra_stripes=True)
        yield Log(id="log", max_lines=5000)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#vm", Static).border_title = "Linux VM"
        self.query_one("#agent", Static).border_title = "fc-agent"
        table = self.query_one(MicroVMTable)
        for column in model.COLUMNS:
            table.add_column(column, key=column)
        table.focus()
        self.draw()
        self._poll("agent", self._poll_agent)
        self._poll("vm", self._poll_vm)
        self.set_interval(self.refresh_s, self._tick)
        self.set_interval(self.vm_refresh_s, lambda: self._poll("vm", self._poll_vm))

    def _tick(self) -> None:
        self._poll("agent", self._poll_agent)
        self.draw()  # also while a poll hangs: the data's age and "UNREACHABLE" show

    def _poll(self, kind: str, work: Callable[[], Awaitable[None]]) -> None:
        """Start poll ``kind`` unless the previous one is still running."""
        running = self._polls.get(kind)
        if running is None or running.is_finished:
            self._polls[kind] = self.run_worker(work(), group=f"poll-{kind}", exit_on_error=False)

    async def _poll_agent(self) -> None:
        await self.source.poll_agent()
        self.draw()

    async def _poll_vm(self) -> None:
        await self.source.poll_vm()
        self.draw()

    def draw(self) -> None:
        try:
            vm = self.query_one("#vm", Static)
        except NoMatches:  # quitting: a last tick or poll after the widgets were removed
            return
        snap = self.source.snapshot
        vm.update(Text("\n".join(model.vm_lines(snap))))
        self.query_one("#agent", Static).update(self._styled(model.agent_lines(snap)))
        alert = self.query_one("#alert", Static)
        alert_lines = model.alert_lines(snap)
        alert.update(Text("\n".join(alert_lines)))
        alert.set_class(bool(alert_lines), "shown")
        self._draw_table(model.visible(snap.microvms, self.filter_text))

    @staticmethod
    def _styled(lines: list[str]) -> Text:
        text = Text()
        for index, line in enumerate(lines):
            style = "bold red" if "UNREACHABLE" in line else "yellow" if line.endswith("(stale)") else ""
            text.append(("\n" if index else "") + line, style=style)
        return text

    def _draw_table(self, infos: list[MicroVMInfo]) -> None:
        table = self.query_one(MicroVMTable)
        selected = self.selected_name()
        rows = {info.name: model.row(info) for info in infos}
        current = [key.value for key in table.rows]
        if current == list(rows):  # same microVMs in the same order: update in place
            for name, cells in rows.items():
                for column, value in zip(model.COLUMNS, cells):
                    cell = self._cell(column, value)
                    if table.get_cell(name, column) != cell:
                        table.update_cell(name, column, cell)
        else:
            table.clear()
            for name, cells in rows.items():
                table.add_row(*(self._cell(c, v) for c, v in zip(model.COLUMNS, cells)), key=name)
            if selected in rows:
                table.move_cursor(row=list(rows).index(selected))
        title = f"microVMs ({len(infos)} of {len(self.source.snapshot.microvms)}, filter: {self.filter_text})" \
            if self.filter_text else f"microVMs ({len(infos)})"
        table.border_title = title
        if not infos:
            table.border_subtitle = "none: press n to create one" if not self.filter_text else "none match the filter"
        else:
            table.border_subtitle = "Enter attaches the console, Ctrl+] comes back"

    @staticmethod
    def _cell(column: str, value: str) -> Text:
        if column == "STATE":
            return Text(value, style=STATE_STYLES.get(value, ""))
        return Text(value, justify="right" if column in ("VCPUS", "MEMORY", "CPU %", "RSS", "UPTIME") else "left")

    # -- selection ----------------------------------------------------------------

    def selected_name(self) -> str | None:
        table = self.query_one(MicroVMTable)
        if table.row_count == 0:
            return None
        row = min(max(table.cursor_row, 0), table.row_count - 1)
        value = table.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value
        return str(value) if value is not None else None

    def selected(self) -> MicroVMInfo | None:
        name = self.selected_name()
        found = [i for i in self.source.snapshot.microvms if i.name == name]
        if not found:
            self.notify("No microVM selected: create one with n", severity="warning")
            return None
        return found[0]

    # -- actions ------------------------------------------------------------------

    async def _act(self, work: Awaitable[object], done: str) -> None:
        try:
            await work
        except FcMacosError as exc:
            self.notify(exc.message + (f"\nHint: {exc.hint}" if exc.hint else ""), severity="error", timeout=10)
        else:
            self.notify(done)
        self._poll("agent", self._poll_agent)

    def action_stop(self) -> None:
        if info := self.selected():
            self.notify(f"Stopping {info.name}...")
            self.run_worker(self._act(self.source.stop(info.name), f"Stopped {info.name}."), group="action")

    def action_pause(self) -> None:
        if info := self.selected():
            verb = "Resumed" if info.state == PAUSED else "Paused"
            self.run_worker(self._act(self.source.pause_or_resume(info), f"{verb} {info.name}."), group="action")

    def action_delete(self) -> None:
        info = self.selected()
        if info is None:
            return
        name = info.name

        def answered(yes: bool | None) -> None:
            if yes:
                if self.log_name == name:
                    self._close_log()
                self.run_worker(self._act(self.source.delete(name), f"Deleted {name}."), group="action")

        self.push_screen(ConfirmDelete(name, info.state), answered)

    def action_new(self) -> None:
        def created(spec: MicroVMSpec | None) -> None:
            if spec is not None:
                label = spec.name or "a new microVM"
                self.notify(f"Creating {label}{' (booting)' if spec.start else ''}...")
                self.run_worker(self._act(self.source.create(spec), f"Created {label}."), group="action")

        self.push_screen(NewMicroVM(), created)

    def action_help(self) -> None:
        self.push_screen(Help())

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.filter_text = event.value
            self.draw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.query_one(MicroVMTable).focus()
            if not event.value:
                event.input.remove_class("shown")

    def action_escape(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_class("shown") or self.filter_text:
            box.value = ""
            self.filter_text = ""
            box.remove_class("shown")
            self.query_one(MicroVMTable).focus()
            self.draw()
        elif self.log_name is not None:
            self._close_log()

    def action_log(self) -> None:
        info = self.selected()
        if info is None:
            return
        if self.log_name == info.name:
            self._close_log()
            return
        pane = self.query_one("#log", Log)
        pane.clear()
        pane.border_title = f"console log of {info.name} (l closes)"
        pane.add_class("shown")
        self.log_name = info.name
        self.run_worker(self._follow(info.name), group="log", exclusive=True)

    def _close_log(self) -> None:
        self.workers.cancel_group(self, "log")
        self.log_name = None
        self.query_one("#log", Log).remove_class("shown")

    async def _follow(self, name: str) -> None:
        pane = self.query_one("#log", Log)
        try:
            async for chunk in self.source.follow_log(name):
                pane.write(plain(chunk))
        except FcMacosError as exc:
            pane.write(f"\n[cannot follow the log: {exc.message}]\n")
            return
        pane.write(f"\n[end of log: {name} is not running]\n")

    def action_attach(self) -> None:
        info = self.selected()
        if info is None:
            return
        if info.state not in (RUNNING, PAUSED, CREATED):
            self.notify(f"{info.name} is {info.state}: its console is closed. Press l to read its log.",
                        severity="warning")
            return
        argv = list(self.attach_argv(info.name))
        try:
            with self.suspend():
                subprocess.run(argv, check=False)  # blocking on purpose: the dashboard steps aside
        except (SuspendNotSupported, OSError) as exc:  # no terminal to give away; the command cannot start
            self.notify(f"cannot attach the console here: {exc}", severity="error")
        self._poll("agent", self._poll_agent)

    async def action_quit(self) -> None:
        self.workers.cancel_all()
        self.exit()

    async def action_quit_now(self) -> None:
        await self.action_quit()

    async def on_unmount(self) -> None:
        await self.source.close()
