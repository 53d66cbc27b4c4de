"""A protocol-level worker for engine tests: speaks docs/protocol.md directly over HTTP.

It is not a mock of the engine: it is a second, minimal client of the real API, used where a
test needs exact control over leases (e.g. to complete late after losing a lease).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx


class ProtocolWorker:
    def __init__(self, api_url: str, key: str, tasks: list[str], **task_options: Any) -> None:
        self.http = httpx.Client(
            base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=40
        )
        self.instance_id = str(uuid.uuid4())
        manifest = [{"id": t, "queue": {"name": f"task/{t}"}, **task_options} for t in tasks]
        reply = self.post(
            "/engine/v1/worker/register",
            {
                "instance_id": self.instance_id,
                "content_hash": uuid.uuid4().hex,
                "tasks": manifest,
            },
        )
        self.version_id = reply["version_id"]

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def dequeue(self, max_runs: int = 1, wait_ms: int = 0) -> list[dict[str, Any]]:
        return self.post(
            "/engine/v1/worker/dequeue",
            {
                "instance_id": self.instance_id,
                "versions": [self.version_id],
                "max_runs": max_runs,
                "wait_ms": wait_ms,
            },
        )["runs"]

    def complete(self, run: dict[str, Any], **result: Any) -> dict[str, Any]:
        item = {"run_id": run["run_id"], "attempt_number": run["attempt_number"], **result}
        return self.post(
            "/engine/v1/worker/complete",
            {
                "instance_id": self.instance_id,
                "completions": [item],
            },
        )["results"][0]

    def heartbeat(self, run_ids: list[str]) -> dict[str, Any]:
        return self.post(
            "/engine/v1/worker/heartbeat", {"instance_id": self.instance_id, "run_ids": run_ids}
        )

    def close(self) -> None:
        self.http.close()
