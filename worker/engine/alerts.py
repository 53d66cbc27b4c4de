"""Alert channels of an environment: where failed runs and deploys are reported (Trigger.dev's
project alerts). Delivery is the alerter service's job (worker/engine/services/alerter.py).

A channel is ``EMAIL`` (``{"to": ["ops@example.com"]}``, sent over the API's SMTP settings),
``SLACK`` (``{"url": <incoming webhook URL>}``) or ``WEBHOOK`` (``{"url", "secret"?}``: a JSON
POST signed with ``x-trigger-signature: sha256=<hex HMAC of the body>`` when a secret is set).
``alert_types`` is a subset of ``TASK_RUN_FAILED`` and ``DEPLOYMENT_SUCCESS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import orjson
from pydantic import BaseModel, ConfigDict, Field

from worker.engine.db import Pool, Row, fetch_all, fetch_one
from worker.engine.errors import EngineError, NotFound
from worker.engine.ids import new_id
from worker.engine.keys import Environment
from worker.engine.queries import Q

ALERT_TYPES = ("TASK_RUN_FAILED", "DEPLOYMENT_SUCCESS")
CHANNEL_TYPES = ("EMAIL", "SLACK", "WEBHOOK")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ChannelBody(BaseModel):
    """``POST /api/v1/alerts`` body."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=200)
    type: str
    alert_types: list[str] = Field(alias="alertTypes", min_length=1)
    properties: dict[str, Any]


@dataclass(frozen=True)
class Channel:
    id: str
    name: str
    type: str
    properties: dict[str, Any]
    alert_types: list[str]
    enabled: bool

    def public(self) -> dict[str, Any]:
        """The API form; a webhook secret is never echoed back."""
        shown = {k: ("[set]" if k == "secret" else v) for k, v in self.properties.items()}
        return {"id": self.id, "name": self.name, "type": self.type, "properties": shown,
                "alertTypes": self.alert_types, "enabled": self.enabled}


def _check(body: ChannelBody) -> dict[str, Any]:
    if body.type not in CHANNEL_TYPES:
        raise EngineError(f"type must be one of {list(CHANNEL_TYPES)}, not {body.type!r}")
    bad = sorted(set(body.alert_types) - set(ALERT_TYPES))
    if bad:
        raise EngineError(f"unknown alertTypes {bad}; allowed: {list(ALERT_TYPES)}")
    props = body.properties
    if body.type == "EMAIL":
        to = props.get("to")
        to = [to] if isinstance(to, str) else to
        if not isinstance(to, list) or not to or not all(
            isinstance(a, str) and _EMAIL.match(a) for a in to
        ):
            raise EngineError('an EMAIL channel needs properties {"to": ["someone@example.com"]}')
        return {"to": to}
    url = props.get("url")
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise EngineError(f'a {body.type} channel needs properties {{"url": "https://…"}}')
    out: dict[str, Any] = {"url": url}
    if body.type == "WEBHOOK" and props.get("secret") is not None:
        if not isinstance(props["secret"], str) or not props["secret"]:
            raise EngineError("a webhook secret must be a non-empty string")
        out["secret"] = props["secret"]
    unknown = sorted(set(props) - {"url", "secret", "to"})
    if unknown:
        raise EngineError(f"unknown properties {unknown} for a {body.type} channel")
    return out


def _channel(row: Row) -> Channel:
    return Channel(row["id"], row["name"], row["type"], dict(row["properties"]),
                   list(row["alert_types"]), bool(row["enabled"]))


async def create_channel(pool: Pool, env: Environment, body: ChannelBody) -> Channel:
    properties = _check(body)
    params = {"id": new_id("alertchannel"), "environment_id": env.id, "name": body.name,
              "type": body.type, "properties": orjson.dumps(properties).decode(),
              "alert_types": sorted(set(body.alert_types))}
    async with pool.connection() as conn:
        row = await fetch_one(conn, Q.insert_alert_channel, params)
        await conn.commit()
    assert row is not None
    return _channel(row)


async def list_channels(pool: Pool, env: Environment) -> list[Channel]:
    async with pool.connection() as conn:
        rows = await fetch_all(conn, Q.list_alert_channels, {"environment_id": env.id})
    return [_channel(r) for r in rows]


async def delete_channel(pool: Pool, env: Environment, channel_id: str) -> None:
    async with pool.connection() as conn:
        row = await fetch_one(
            conn,
            Q.delete_alert_channel,
            {"id": channel_id, "environment_id": env.id},
        )
        await conn.commit()
    if row is None:
        raise NotFound(f"alert channel {channel_id!r} not found in the {env.slug} environment")
