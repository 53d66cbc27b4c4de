"""Environment variables with Trigger.dev's paths: ``/api/v1/projects/{ref}/envvars/{env}``
(``envvars.*`` of its SDK). A secret key manages its own environment's variables only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from worker.api.auth import authenticate
from worker.api.bodies import read_model
from worker.api.state import engine_of
from worker.engine import env_vars
from worker.engine.errors import Forbidden
from worker.engine.keys import Environment

router = APIRouter(prefix="/api/v1/projects/{project_ref}/envvars/{slug}")
Env = Annotated[Environment, Depends(authenticate)]
REDACTED = "<redacted>"


class CreateBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    value: str
    is_secret: bool = Field(default=False, alias="isSecret")


class UpdateBody(BaseModel):
    value: str


class ImportBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    variables: dict[str, str]
    override: bool = False
    is_secret: bool = Field(default=False, alias="isSecret")


def _own(env: Environment, project_ref: str, slug: str) -> Environment:
    if project_ref != env.project_ref or slug not in (env.slug, env.type.lower()):
        raise Forbidden(
            f"this secret key belongs to the {env.slug} environment of project "
            f"{env.project_ref!r}; it manages only that environment's variables"
        )
    return env


def _show(var: env_vars.EnvVar) -> dict[str, object]:
    return {"name": var.name, "value": REDACTED if var.is_secret else var.value,
            "isSecret": var.is_secret}


@router.get("")
async def list_env_vars(project_ref: str, slug: str, request: Request, env: Env) -> list[object]:
    env = _own(env, project_ref, slug)
    return [_show(v) for v in await engine_of(request).list_env_vars(env)]


@router.post("")
async def create_env_var(project_ref: str, slug: str, request: Request, env: Env) -> object:
    env = _own(env, project_ref, slug)
    body = await read_model(request, CreateBody)
    await engine_of(request).create_env_var(env, body.name, body.value, body.is_secret)
    return {"success": True}


@router.post("/import")
async def import_env_vars(project_ref: str, slug: str, request: Request, env: Env) -> object:
    env = _own(env, project_ref, slug)
    body = await read_model(request, ImportBody)
    await engine_of(request).put_env_vars(env, body.variables, secret=body.is_secret,
                                          overwrite=body.override)
    return {"success": True}


@router.get("/{name}")
async def retrieve_env_var(
    project_ref: str, slug: str, name: str, request: Request, env: Env
) -> object:
    env = _own(env, project_ref, slug)
    return _show(await engine_of(request).retrieve_env_var(env, name))


@router.put("/{name}")
async def update_env_var(project_ref: str, slug: str, name: str, request: Request,
                         env: Env) -> object:
    env = _own(env, project_ref, slug)
    body = await read_model(request, UpdateBody)
    await engine_of(request).update_env_var(env, name, body.value)
    return {"success": True}


@router.delete("/{name}")
async def delete_env_var(project_ref: str, slug: str, name: str, request: Request,
                         env: Env) -> object:
    env = _own(env, project_ref, slug)
    await engine_of(request).delete_env_var(env, name)
    return {"success": True}
