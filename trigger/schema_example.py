"""A schema task: the payload is validated by a pydantic model (by the API and the worker)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from worker import logger, schema_task

__all__ = ["UserInfo", "greet_user"]


class UserInfo(BaseModel):
    name: str = Field(min_length=1)
    age: int = Field(ge=0, le=150)


@schema_task(id="greet-user", schema=UserInfo)
async def greet_user(payload: UserInfo, ctx: Any) -> dict[str, Any]:
    logger.info("Validated user info", name=payload.name, age=payload.age)
    return {"greeting": f"Hi {payload.name}", "adult": payload.age >= 18}
