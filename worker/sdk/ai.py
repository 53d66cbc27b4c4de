"""``ai.tool``: a schema task as a tool for LLM function calling (Trigger.dev's ``ai.tool``).

``weather = ai.tool(get_weather)`` (a ``schema_task`` whose schema yields a JSON schema) gives
the tool's ``name`` (the task id, made safe for tool names), ``description`` and ``parameters``
(the payload's JSON schema), in the formats of the two Python SDKs:

* ``weather.openai()`` → ``{"type": "function", "function": {name, description, parameters}}``
  (OpenAI Chat Completions ``tools=[...]``);
* ``weather.anthropic()`` → ``{name, description, input_schema}`` (Anthropic ``tools=[...]``).

``await weather.call(arguments)`` runs the tool: it triggers the task with ``arguments`` (a dict
or the JSON string the model produced) and waits for its output — durably with
``trigger_and_wait`` inside a run, by polling the run elsewhere — raising when the run failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from worker.sdk.context import current_context
from worker.sdk.task import Task
from worker.sdk.tasks_api import tasks


class ToolRunError(RuntimeError):
    """The task behind a tool call did not complete successfully."""


@dataclass(frozen=True)
class AiTool:
    task: Task[Any, Any]
    name: str
    description: str
    parameters: dict[str, object]

    def openai(self) -> dict[str, object]:
        return {"type": "function", "function": {"name": self.name,
                                                  "description": self.description,
                                                  "parameters": self.parameters}}

    def anthropic(self) -> dict[str, object]:
        return {"name": self.name, "description": self.description,
                "input_schema": self.parameters}

    async def call(self, arguments: object, *, poll_interval_ms: int = 500,
                   timeout: float | None = None) -> Any:
        payload = orjson.loads(arguments) if isinstance(arguments, str | bytes) else arguments
        if current_context() is not None:
            return (await self.task.trigger_and_wait(payload)).unwrap()
        run = await tasks.trigger_and_poll(self.task.id, payload,
                                           poll_interval_ms=poll_interval_ms, timeout=timeout)
        if not run.is_success:
            raise ToolRunError(f"tool {self.name}: run {run.id} ended {run.status}: {run.error}")
        return run.output

    execute = call


class Ai:
    def tool(self, task: Task[Any, Any], *, description: str | None = None) -> AiTool:
        if not isinstance(task, Task):
            raise TypeError("ai.tool needs a task (a schema_task, so the model sees its schema)")
        schema = task.schema.model_json_schema() if task.schema is not None else None
        if not isinstance(schema, dict):
            raise TypeError(
                f"ai.tool: task {task.id!r} has no JSON schema for its payload; declare it with "
                "schema_task and a pydantic model, TypeAdapter, dataclass, TypedDict or "
                "JSON-schema dict"
            )
        name = re.sub(r"[^A-Za-z0-9_-]", "_", task.id)[:64]
        return AiTool(task, name, description or task.description or task.id, schema)


ai = Ai()
