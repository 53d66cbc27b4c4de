"""The alerter: reports failed runs and deploys to the environments' alert channels
(worker/engine/alerts.py) by email (SMTP), Slack incoming webhook or a signed JSON webhook.

Every ``interval`` seconds: (1) runs that failed (FAILED, CRASHED, SYSTEM_FAILURE, TIMED_OUT)
since the cursor become one delivery per matching channel; the cursor trails ``now`` by
``lag`` seconds so a run whose completion commits late is still seen; (2) due deliveries are
claimed (so API replicas never send one twice) and sent; a failed send is retried after
30 s, 2 min, ... up to 5 attempts, its last error kept on the row. Deploy alerts are queued by
the deploy promotion itself. SMTP settings come from ``TRIGGER_SMTP_*``; without
``TRIGGER_SMTP_HOST`` email deliveries fail (and say so in ``last_error``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import smtplib
from email.message import EmailMessage
from typing import Any

import orjson

from worker.common.statuses import API_STATUS
from worker.engine.db import Pool, Row, fetch_all, fetch_one
from worker.engine.queries import Q
from worker.engine.services.periodic import periodic
from worker.engine.settings import AlertSettings

log = logging.getLogger(__name__)
CURSOR = "runs"


def summary(alert_type: str, body: dict[str, Any]) -> tuple[str, str]:
    """(subject, text) of an alert."""
    where = f"[{body.get('project')}/{body.get('environment')}]"
    if alert_type == "DEPLOYMENT_SUCCESS":
        version = body.get("version")
        subject = f"{where} deployed {version}"
        return subject, f"Deployment {body.get('deploymentId')} is live: version {version}."
    status = API_STATUS.get(str(body.get("status")), body.get("status"))
    error = body.get("error") or {}
    message = error.get("message") or error.get("raw") or error.get("code") or "no message"
    subject = f"{where} run {body.get('runId')} of {body.get('taskIdentifier')} {status}"
    return subject, f"{subject}\nError: {message}\nAttempts: {body.get('attempts')}"


def _send_email(settings: AlertSettings, to: list[str], subject: str, text: str) -> None:
    if not settings.smtp_host:
        raise RuntimeError("email alerts need TRIGGER_SMTP_HOST on the API server")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = settings.smtp_from, ", ".join(to), subject
    msg.set_content(text)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password)
        smtp.send_message(msg)


async def deliver(settings: AlertSettings, row: Row) -> None:
    """Send one claimed delivery; raise on failure."""
    import httpx

    body = dict(row["body"])
    subject, text = summary(row["alert_type"], body)
    props = dict(row["properties"])
    if row["type"] == "EMAIL":
        await asyncio.to_thread(_send_email, settings, list(props["to"]), subject, text)
        return
    if row["type"] == "SLACK":
        content = orjson.dumps({"text": text})
        headers = {"content-type": "application/json"}
    else:
        content = orjson.dumps({"type": row["alert_type"], "channel": row["name"],
                                "subject": subject, **body})
        headers = {"content-type": "application/json", "x-trigger-alert": row["alert_type"]}
        if props.get("secret"):
            digest = hmac.new(str(props["secret"]).encode(), content, hashlib.sha256).hexdigest()
            headers["x-trigger-signature"] = f"sha256={digest}"
    async with httpx.AsyncClient(timeout=15) as http:
        response = await http.post(str(props["url"]), content=content, headers=headers)
    if response.status_code >= 300:
        raise RuntimeError(f"{row['type']} endpoint answered {response.status_code}")


async def queue_failures(pool: Pool, settings: AlertSettings) -> None:
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(Q.init_alert_cursor, {"name": CURSOR})
        cur = await fetch_one(
            conn,
            Q.lock_alert_cursor,
            {"name": CURSOR, "lag_seconds": settings.lag},
        )
        if cur is None or cur["until"] <= cur["position"]:
            return
        window = {"since": cur["position"], "until": cur["until"], "name": CURSOR}
        await conn.execute(Q.queue_run_failure_alerts, window)
        await conn.execute(Q.move_alert_cursor, window)


async def send_due(pool: Pool, settings: AlertSettings, limit: int = 50) -> int:
    async with pool.connection() as conn:
        rows = await fetch_all(conn, Q.claim_alert_deliveries, {"limit": limit})
        await conn.commit()
    for row in rows:
        try:
            await deliver(settings, row)
        except Exception as exc:  # kept on the row; retried with backoff
            error = f"{type(exc).__name__}: {exc}"[:1000]
            log.warning("alert %s via %s failed: %s", row["id"], row["type"], error)
            params = {"id": row["id"], "error": error,
                      "retry_seconds": 30 * 4 ** (int(row["attempts"]) - 1)}
            query = Q.mark_alert_failed
        else:
            params, query = {"id": row["id"]}, Q.mark_alert_sent
        async with pool.connection() as conn:
            await conn.execute(query, params)
            await conn.commit()
    return len(rows)


async def run_alerter(pool: Pool, settings: AlertSettings) -> None:
    async def sweep() -> None:
        await queue_failures(pool, settings)
        while await send_due(pool, settings) > 0:
            pass

    await periodic("alerter", sweep, settings.interval)
