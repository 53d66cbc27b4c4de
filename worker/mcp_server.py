"""``trigger mcp``: a Model Context Protocol server over stdio, for AI assistants.

It is a client of the API (``TRIGGER_API_URL``, ``TRIGGER_SECRET_KEY``): each tool is one or two
HTTP calls, so it sees exactly what the key's environment allows. Tools: ``list_tasks`` (with
payload schemas), ``trigger_task``, ``get_run`` (status, output, error), ``get_run_logs``,
``get_run_trace``, ``list_runs`` (filters), ``cancel_run``, ``replay_run``. Errors come back as
tool errors carrying the API's message.
"""

from __future__ import annotations

from typing import TypeAlias

import httpx
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import JsonValue

#: what the API answers and a tool returns: a JSON object, passed through as it is
JsonObject: TypeAlias = dict[str, JsonValue]
#: query parameters of one API call
Params: TypeAlias = dict[str, str | int]

INSTRUCTIONS = (
    "Tools for a trigger-worker environment (Trigger.dev v4 semantics): list the tasks and "
    "their payload JSON schemas, trigger a task with a JSON payload, follow its run (status "
    "QUEUED, EXECUTING, COMPLETED, FAILED, ...), read its output, error and logs, list runs, "
    "cancel or replay one."
)


class ApiError(ToolError):
    """The API refused or could not be reached: a tool error with its message (not a crash)."""


class Api:
    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=30,
                                      headers={"Authorization": f"Bearer {key}"})

    async def call(self, method: str, path: str, *, json: JsonObject | None = None,
                   params: Params | None = None) -> JsonObject:
        try:
            res = await self.http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the API at {self.http.base_url}: {exc}") from None
        if res.status_code >= 400:
            try:
                message = res.json().get("error") or res.text
            except ValueError:
                message = res.text
            raise ApiError(f"API answered {res.status_code}: {message}")
        body = res.json()
        if not isinstance(body, dict):
            raise ApiError(f"API answered {res.status_code} with a non-object: {res.text[:200]}")
        return body


def build_server(api_url: str, secret_key: str) -> MCPServer:
    api = Api(api_url, secret_key)
    server: MCPServer = MCPServer(name="trigger-worker", instructions=INSTRUCTIONS)

    @server.tool(description="The environment's tasks: id, queue, machine, retry, max duration "
                             "and the JSON schema a payload must match (payloadSchema, or null).")
    async def list_tasks() -> JsonObject:
        return await api.call("GET", "/api/v1/tasks")

    @server.tool(description="Trigger a task with a JSON payload. Options (optional): tags, "
                             "idempotencyKey, delay ('10s'), ttl, queue, concurrencyKey, "
                             "maxAttempts, machine, metadata. Returns the run id.")
    async def trigger_task(task_id: str, payload: JsonValue = None,
                           options: JsonObject | None = None) -> JsonObject:
        body: JsonObject = {"payload": payload, "options": options or {}}
        return await api.call("POST", f"/api/v1/tasks/{task_id}/trigger", json=body)

    @server.tool(description="A run: status, output, error, attempts, timestamps, tags, "
                             "metadata.")
    async def get_run(run_id: str) -> JsonObject:
        return await api.call("GET", f"/api/v3/runs/{run_id}")

    @server.tool(description="A run's log lines, oldest first (cursor: the previous page's "
                             "pagination.next; level: that level and above).")
    async def get_run_logs(run_id: str, cursor: str | None = None, limit: int = 100,
                           level: str | None = None) -> JsonObject:
        params: Params = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        if level:
            params["level"] = level
        return await api.call("GET", f"/api/v1/runs/{run_id}/logs", params=params)

    @server.tool(description="A run's trace: the span tree of the run and the runs below it "
                             "(attempts, children, logs).")
    async def get_run_trace(run_id: str) -> JsonObject:
        return await api.call("GET", f"/api/v1/runs/{run_id}/trace")

    @server.tool(description="Runs, newest first. Filters: status (e.g. 'COMPLETED', "
                             "'FAILED', 'EXECUTING', comma-separated), task, tag; limit 1..100.")
    async def list_runs(status: str | None = None, task: str | None = None,
                        tag: str | None = None, limit: int = 25) -> JsonObject:
        params: Params = {"page[size]": limit}
        for name, value in (("status", status), ("taskIdentifier", task), ("tag", tag)):
            if value:
                params[f"filter[{name}]"] = value
        return await api.call("GET", "/api/v1/runs", params=params)

    @server.tool(description="Cancel a run that has not finished.")
    async def cancel_run(run_id: str) -> JsonObject:
        return await api.call("POST", f"/api/v2/runs/{run_id}/cancel")

    @server.tool(description="Replay a run: a new run of the same task with the same payload.")
    async def replay_run(run_id: str) -> JsonObject:
        return await api.call("POST", f"/api/v1/runs/{run_id}/replay")

    return server


def main(api_url: str, secret_key: str) -> int:
    """Serve over stdio until the client closes it (``trigger mcp`` checks the key is set)."""
    build_server(api_url, secret_key).run("stdio")
    return 0
