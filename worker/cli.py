"""The ``trigger`` command: dev, worker, api, migrate, project."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set: point it at the engine's Postgres")
    return url


def cmd_dev(args: argparse.Namespace) -> int:
    from worker.dev import run_dev

    return run_dev(Path(args.project_dir), args.port, args.concurrency)


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.runtime.supervisor import main as worker_main

    if not os.environ.get("TRIGGER_SECRET_KEY"):
        raise SystemExit(
            "TRIGGER_SECRET_KEY is not set: use the environment's secret key "
            "(trigger project create <ref> prints them)"
        )
    from worker.console import DevConsole

    api_url = os.environ.get("TRIGGER_API_URL", "http://127.0.0.1:3030")
    console = DevConsole(api_url)
    on_event = console.event
    if not sys.stdout.isatty() and os.environ.get("TRIGGER_VERBOSE") != "1":
        # A container's log is not a console: a line per run start, success and log record
        # costs ~10% of the supervisor at high rates. Failures and worker events still print.
        quiet = {"run_started", "run_finished", "log", "run_suspended"}

        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") not in quiet or event.get("ok") is False:
                console.event(event)

    worker_main(
        Path(args.project_dir),
        api_url,
        os.environ["TRIGGER_SECRET_KEY"],
        concurrency=args.concurrency,
        watch=False,
        on_event=on_event,
    )
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    _database_url()
    uvicorn.run(
        "worker.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info",
        proxy_headers=True,
    )
    return 0


def cmd_migrate(_: argparse.Namespace) -> int:
    from worker.engine.migrate import migrate

    applied = migrate(_database_url())
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


def cmd_project_create(args: argparse.Namespace) -> int:
    from worker.engine.keys import create_project
    from worker.engine.migrate import migrate

    url = _database_url()
    migrate(url)
    given = {slug: key for slug, key in (("dev", args.dev_key), ("prod", args.prod_key)) if key}
    try:
        keys = create_project(url, args.ref, given)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    print(f"project {args.ref}: secret keys (only their hashes are stored)")
    for slug, key in keys.items():
        # a key the caller passed in is not echoed back: it may be headed for a log
        print(f"  {slug:5} {'(as given)' if slug in given else key}")
    return 0


def cmd_schedules_list(args: argparse.Namespace) -> int:
    """One line per schedule of the environment of TRIGGER_SECRET_KEY."""
    import asyncio

    from worker.sdk.errors import ApiError
    from worker.sdk.schedules import schedules

    async def fetch() -> list[Any]:
        found: list[Any] = []
        page = 1
        while True:
            result = await schedules.list(page=page, per_page=100, task=args.task)
            found += result.data
            if page >= result.total_pages:
                return found
            page += 1

    try:
        rows = asyncio.run(fetch())
    except ApiError as exc:
        raise SystemExit(f"cannot list schedules: {exc}") from None
    if not rows:
        print("no schedules")
        return 0
    print(f"{'ID':<32} {'TASK':<24} {'TYPE':<11} {'CRON':<16} {'TIMEZONE':<20} "
          f"{'ACTIVE':<6} NEXT RUN")
    for s in rows:
        nxt = s.next_run.isoformat(timespec="minutes") if s.next_run else "-"
        print(f"{s.id:<32} {s.task:<24} {s.type:<11} {s.cron:<16} {s.timezone:<20} "
              f"{'yes' if s.active else 'no':<6} {nxt}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trigger", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the API and a hot-reloading worker locally")
    dev.add_argument("--project-dir", default=".", help="folder with trigger_config.py")
    dev.add_argument("--port", type=int, default=int(os.environ.get("TRIGGER_PORT", "3030")))
    dev.add_argument("--concurrency", type=int, default=None)
    dev.set_defaults(func=cmd_dev)

    wrk = sub.add_parser(
        "worker", help="run a worker replica (TRIGGER_API_URL, TRIGGER_SECRET_KEY)"
    )
    wrk.add_argument("--project-dir", default=".")
    wrk.add_argument("--concurrency", type=int, default=None)
    wrk.set_defaults(func=cmd_worker)

    api = sub.add_parser("api", help="run the API server (DATABASE_URL)")
    api.add_argument("--host", default="0.0.0.0")
    api.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3030")))
    api.add_argument("--workers", type=int, default=1)
    api.set_defaults(func=cmd_api)

    mig = sub.add_parser("migrate", help="apply the engine's database migrations (DATABASE_URL)")
    mig.set_defaults(func=cmd_migrate)

    sched = sub.add_parser("schedules", help="list schedules (TRIGGER_API_URL, TRIGGER_SECRET_KEY)")
    sched_sub = sched.add_subparsers(dest="schedules_command", required=True)
    sched_list = sched_sub.add_parser("list", help="list the environment's schedules")
    sched_list.add_argument("--task", default=None, help="only this task's schedules")
    sched_list.set_defaults(func=cmd_schedules_list)

    project = sub.add_parser("project", help="manage projects")
    project_sub = project.add_subparsers(dest="project_command", required=True)
    create = project_sub.add_parser("create", help="create a project; print its secret keys")
    create.add_argument("ref")
    create.add_argument(
        "--dev-key",
        default=os.environ.get("TRIGGER_DEV_SECRET_KEY"),
        help="register this dev key instead of generating one (env TRIGGER_DEV_SECRET_KEY)",
    )
    create.add_argument(
        "--prod-key",
        default=os.environ.get("TRIGGER_PROD_SECRET_KEY"),
        help="register this prod key instead of generating one (env TRIGGER_PROD_SECRET_KEY)",
    )
    create.set_defaults(func=cmd_project_create)

    from worker.cli_deploy import add_commands  # login, whoami, deploy

    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
