"""What fc-agent's route modules share: the application key under which the
app keeps its :class:`~fc_macos.agent.manager.MicroVMManager` (one key, so
every module's handlers read the manager the app was built with) and the
registration of a module's ``ROUTES``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from fc_macos.agent.manager import MicroVMManager

MANAGER: web.AppKey[MicroVMManager] = web.AppKey("manager", MicroVMManager)

Routes = Iterable[tuple[str, str, Any]]


def add_routes(app: web.Application, routes: Routes) -> None:
    """Serve each ``(method, path, handler)`` of ``routes``."""
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)


__all__ = ["MANAGER", "Routes", "add_routes"]
