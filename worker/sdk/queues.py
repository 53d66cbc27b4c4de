"""``queues``: list queues and control them at runtime (pause, resume, limit override)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from worker.sdk import transport
from worker.sdk.pagination import Page, PageList


def _path(name: str, suffix: str = "") -> str:
    return f"/api/v1/queues/{quote(name, safe='/')}{suffix}"




class Queues:
    def list(self) -> PageList[dict[str, Any]]:
        """``await queues.list()`` → a page (iterable, ``.data``); ``async for q in ...``."""

        async def fetch(_: object) -> Page[dict[str, Any]]:
            response = await transport.request("GET", "/api/v1/queues")
            return Page(list(response.json()["data"]))

        return PageList(fetch)

    async def retrieve(self, name: str) -> dict[str, Any]:
        """``name`` is a queue name; a task's default queue is ``"task/<task id>"``."""
        return dict((await transport.request("GET", _path(name))).json())

    async def pause(self, name: str) -> dict[str, Any]:
        response = await transport.request(
            "POST", _path(name, "/pause"), json={"action": "pause"}
        )
        return dict(response.json())

    async def resume(self, name: str) -> dict[str, Any]:
        response = await transport.request(
            "POST", _path(name, "/pause"), json={"action": "resume"}
        )
        return dict(response.json())

    async def override_concurrency_limit(self, name: str, limit: int) -> dict[str, Any]:
        response = await transport.request(
            "POST", _path(name, "/concurrency/override"), json={"concurrencyLimit": limit}
        )
        return dict(response.json())

    async def reset_concurrency_limit(self, name: str) -> dict[str, Any]:
        return dict((await transport.request("POST", _path(name, "/concurrency/reset"))).json())


queues = Queues()
