"""``alerts``: where an environment's failed runs and deploys are reported (Trigger.dev's
project alerts, configured here per environment through the API).

``await alerts.create(name="ops", type="EMAIL", to=["ops@example.com"])``,
``alerts.create(name="slack", type="SLACK", url=<incoming webhook>)``,
``alerts.create(name="hook", type="WEBHOOK", url=..., secret=...)``; ``alert_types`` defaults to
``["TASK_RUN_FAILED"]`` (add ``"DEPLOYMENT_SUCCESS"`` for deploys). ``alerts.list()``,
``alerts.delete(id)``. The API's alerter sends them (worker/engine/services/alerter.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.sdk import transport
from worker.sdk.transport import path_segment


@dataclass(frozen=True)
class AlertChannel:
    id: str
    name: str
    type: str
    alert_types: list[str]
    properties: dict[str, Any]
    enabled: bool

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> AlertChannel:
        return cls(data["id"], data["name"], data["type"], list(data["alertTypes"]),
                   dict(data["properties"]), bool(data["enabled"]))


class Alerts:
    async def create(self, *, name: str, type: str, alert_types: list[str] | None = None,
                     to: list[str] | str | None = None, url: str | None = None,
                     secret: str | None = None) -> AlertChannel:
        props: dict[str, object] = {"to": to} if type == "EMAIL" else {"url": url}
        if secret is not None:
            props["secret"] = secret
        body = {"name": name, "type": type, "properties": props,
                "alertTypes": alert_types or ["TASK_RUN_FAILED"]}
        response = await transport.request("POST", "/api/v1/alerts", json=body)
        return AlertChannel.from_api(response.json())

    async def list(self) -> list[AlertChannel]:
        response = await transport.request("GET", "/api/v1/alerts")
        return [AlertChannel.from_api(c) for c in response.json()["data"]]

    async def delete(self, channel_id: str) -> None:
        await transport.request("DELETE", f"/api/v1/alerts/{path_segment(channel_id)}")


alerts = Alerts()
