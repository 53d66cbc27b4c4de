"""The trigger command: init, dev, worker, api, migrate, schedules, project.

Expected failures (no config, API unreachable, a refused key, no database) end with one line
on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from worker.cli_settings import LOG_FORMATS, CliSettings
from worker.common.conventions import CONFIG_FILE
from worker.common.settings import SettingsError

if TYPE_CHECKING:
    from worker.cli_settings import SubParsers

DESCRIPTION = (
    "Durable background tasks in Python with Trigger.dev v4 semantics. "
    "Start with 'trigger init' in an empty folder, then 'trigger dev'."
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trigger-worker")
    except PackageNotFoundError:
        return "unknown"


Command = Callable[[argparse.Namespace, CliSettings], int]


def cmd_init(args: argparse.Namespace, _: CliSettings) -> int:
    from worker.scaffold import scaffold

    target = Path(args.dir).resolve()
    written, kept = scaffold(target, args.project)
    for path in written:
        print(f"  created  {path.relative_to(target)}")
    for path in kept:
        print(f"  kept     {path.relative_to(target)} (already there)")
    where = "" if target == Path.cwd().resolve() else f"cd {args.dir} && "
    print(f"\nnext: {where}trigger dev      (then, in another terminal: pytest)")
    return 0


def cmd_dev(args: argparse.Namespace, settings: CliSettings) -> int:
    from worker.dev import run_dev

    return run_dev(Path(args.project_dir), settings, args.concurrency)


def wait_for_api(api_url: str, key: str, patience: float) -> None:
    """Until the API (any of several comma-separated URLs) answers and accepts ``key``;
    retries with backoff for ``patience`` s."""
    from worker.cli_probe import get_status
    from worker.sdk.settings import api_urls

    deadline = time.monotonic() + patience
    delay = 0.5
    urls = api_urls(api_url)
    while True:
        try:
            status = None
            for index, url in enumerate(urls):
                try:
                    status = get_status(url, "/api/v1/queues", key, timeout=5)
                    break
                except OSError:
                    if index == len(urls) - 1:
                        raise
            assert status is not None
        except OSError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(
                    f"cannot reach the API at {api_url} ({type(exc).__name__}) after "
                    f"{patience:.0f} s: start it (trigger api / trigger dev) or set "
                    "TRIGGER_API_URL"
                ) from None
            print(f"the API at {api_url} is not reachable yet; retrying in {delay:.1f} s",
                  file=sys.stderr)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 10.0)
            continue
        # 403: a worker token, valid but not for this endpoint (worker/api/auth.py)
        if status == 401:
            raise SystemExit(
                f"the API at {api_url} refused the key (401): use a worker token "
                "(TRIGGER_WORKER_TOKEN) or a key that trigger project create (or trigger dev) "
                "printed"
            )
        return


def cmd_worker(args: argparse.Namespace, settings: CliSettings) -> int:
    from worker.runtime.worker_main import main as worker_main
    from worker.runtime.zygote_process import DiscoveryFailed

    # a worker token (production) or, in development, the secret key (worker/api/auth.py)
    key = settings.worker_token or settings.secret_key
    if not key:
        raise SystemExit(
            "TRIGGER_WORKER_TOKEN is not set: create one with `trigger keys create --type "
            "worker` (a dev environment's TRIGGER_SECRET_KEY also works)"
        )
    project_dir = Path(args.project_dir)
    if not (project_dir / CONFIG_FILE).is_file():
        raise SystemExit(f"no {CONFIG_FILE} in {project_dir.resolve()}: pass --project-dir "
                         "or run trigger init")
    from worker.console import DevConsole

    api_url = settings.api_url
    wait_for_api(api_url, key, settings.api_wait)
    if args.metrics_port:  # read by the supervisor (worker/runtime/worker_metrics.py)
        os.environ["TRIGGER_WORKER_METRICS_PORT"] = str(args.metrics_port)
    console = DevConsole(api_url)
    on_event = console.event
    if not sys.stdout.isatty() and not settings.verbose:
        # A container's log is not a console: a line per run start, success and log record
        # costs ~10% of the supervisor at high rates. Failures and worker events still print.
        quiet = {"run_started", "run_finished", "log", "run_suspended"}

        def on_event(event: Mapping[str, object]) -> None:
            if event.get("type") not in quiet or event.get("ok") is False:
                console.event(event)

    try:
        worker_main(project_dir, api_url, key, concurrency=args.concurrency, watch=False,
                    on_event=on_event)
    except DiscoveryFailed as exc:
        raise SystemExit(f"the project cannot be loaded: {exc}") from None
    return 0


def cmd_api(args: argparse.Namespace, settings: CliSettings) -> int:
    try:
        import uvicorn
    except ImportError:
        raise SystemExit("the API needs the server extra: pip install 'trigger-worker[server]'")\
            from None

    from worker.api.http_protocol import NAME as HTTP_PROTOCOL
    from worker.api.observability import configure_logging

    settings.require_database_url()
    os.environ["TRIGGER_LOG_FORMAT"] = settings.log_format  # for uvicorn's worker processes too
    configure_logging(settings.log_format, args.log_level)
    uvicorn.run(
        "worker.api.app:create_app",
        factory=True,
        http=HTTP_PROTOCOL,  # a response's head and body in one send
        host=args.host,
        port=settings.api_port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=None,  # our handlers (worker/api/observability.py)
        proxy_headers=True,
    )
    return 0


def cmd_migrate(_: argparse.Namespace, settings: CliSettings) -> int:
    from worker.engine.migrate import migrate

    applied = migrate(settings.require_database_url())
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


def cmd_project_create(args: argparse.Namespace, settings: CliSettings) -> int:
    from worker.engine.keys import create_project
    from worker.engine.migrate import migrate

    url = settings.require_database_url()
    migrate(url)
    given = {slug: key for slug, key in (("dev", settings.dev_secret_key),
                                         ("prod", settings.prod_secret_key)) if key}
    try:
        keys = create_project(url, args.ref, given)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    print(f"project {args.ref}: secret keys (only their hashes are stored)")
    for slug, key in keys.items():
        # a key the caller passed in is not echoed back: it may be headed for a log
        print(f"  {slug:5} {'(as given)' if slug in given else key}")
    return 0


def cmd_schedules_list(args: argparse.Namespace, _: CliSettings) -> int:
    """One line per schedule of the environment of TRIGGER_SECRET_KEY (the SDK's client)."""
    import asyncio

    from worker.sdk.errors import ApiError
    from worker.sdk.schedules import Schedule, schedules

    async def fetch() -> list[Schedule]:
        return [s async for s in schedules.list(per_page=100, task=args.task)]

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


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option's help when it has a default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "%(default)" not in text
            and action.default not in (None, argparse.SUPPRESS, False)
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


class _VersionAction(argparse.Action):
    """``--version``, read from the package metadata only when asked (importlib.metadata and
    the email parser it loads are ~0.8 MiB of every ``trigger worker`` otherwise)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: None = None, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0,
                         help=help or "show program's version number and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"trigger-worker {_version()}")  # on stdout, as argparse's own action does
        parser.exit()


def _parser(sub: SubParsers, name: str, help: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=help, formatter_class=_HelpFormatter
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trigger", description=DESCRIPTION, formatter_class=_HelpFormatter
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = _parser(sub, "init", "create a project: config, an example task, a test, settings")
    init.add_argument("dir", nargs="?", default=".", help="the project folder")
    init.add_argument("--project", default=None,
                      help="project ref (default: the folder's name)")
    init.set_defaults(func=cmd_init)

    dev = _parser(sub, "dev", "run Postgres, the API and a hot-reloading worker locally")
    dev.add_argument("--project-dir", default=".", help="folder with trigger_config.py")
    dev.add_argument("--port", type=int, default=None, dest="dev_port",
                     help="the API's port; 0 picks a free one (env TRIGGER_PORT, else 3030)")
    dev.add_argument("--concurrency", type=int, default=None,
                     help="runs at once (default: the config's concurrency)")
    dev.set_defaults(func=cmd_dev)

    wrk = _parser(sub, "worker", "run a worker replica (TRIGGER_API_URL, TRIGGER_SECRET_KEY)")
    wrk.add_argument("--project-dir", default=".", help="folder with trigger_config.py")
    wrk.add_argument("--concurrency", type=int, default=None,
                     help="runs at once (default: TRIGGER_CONCURRENCY, else the config's)")
    wrk.add_argument("--api-wait", type=float, default=None,
                     help="seconds to keep retrying an unreachable API at start "
                          "(env TRIGGER_API_WAIT, else 60)")
    wrk.add_argument("--metrics-port", type=int, default=None,
                     help="serve this replica's Prometheus metrics on 127.0.0.1:PORT")
    wrk.set_defaults(func=cmd_worker)

    api = _parser(sub, "api", "run the API server (DATABASE_URL)")
    api.add_argument("--host", default="0.0.0.0", help="address to listen on")
    api.add_argument("--port", type=int, default=None, dest="api_port",
                     help="port to listen on (env PORT, else 3030)")
    api.add_argument("--workers", type=int, default=1, help="API processes")
    api.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                     help="server log lines: text, or JSON lines (env TRIGGER_LOG_FORMAT, "
                          "else text)")
    api.add_argument("--log-level", default="info",
                     choices=("debug", "info", "warning", "error"), help="lowest level logged")
    api.set_defaults(func=cmd_api)

    mig = _parser(sub, "migrate", "apply the engine's database migrations (DATABASE_URL)")
    mig.set_defaults(func=cmd_migrate)

    sched = _parser(sub, "schedules", "list schedules (TRIGGER_API_URL, TRIGGER_SECRET_KEY)")
    sched_sub = sched.add_subparsers(dest="schedules_command", required=True, metavar="COMMAND")
    sched_list = _parser(sched_sub, "list", "list the environment's schedules")
    sched_list.add_argument("--task", default=None, help="only this task's schedules")
    sched_list.set_defaults(func=cmd_schedules_list)

    project = _parser(sub, "project", "manage projects (DATABASE_URL)")
    project_sub = project.add_subparsers(dest="project_command", required=True, metavar="COMMAND")
    create = _parser(project_sub, "create", "create a project; print its secret keys")
    create.add_argument("ref", help="the project's ref, e.g. my-project")
    create.add_argument(
        "--dev-key", default=None, dest="dev_secret_key",
        help="register this dev key instead of generating one (env TRIGGER_DEV_SECRET_KEY)",
    )
    create.add_argument(
        "--prod-key", default=None, dest="prod_secret_key",
        help="register this prod key instead of generating one (env TRIGGER_PROD_SECRET_KEY)",
    )
    create.set_defaults(func=cmd_project_create)

    from worker.cli_deploy import add_commands  # login, whoami, deploy
    from worker.cli_runs import add_commands as add_run_commands  # runs list/show, logs

    add_commands(sub, _HelpFormatter)
    add_run_commands(sub, _HelpFormatter)
    from worker.cli_keys import add_commands as add_key_commands  # keys
    from worker.cli_ops import add_commands as add_ops_commands  # mcp, retention

    add_key_commands(sub, _HelpFormatter)
    add_ops_commands(sub, _HelpFormatter)
    from worker.cli_users import add_commands as add_user_commands  # users (dashboard)

    add_user_commands(sub, _HelpFormatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["worker"]:
        # before the imports below and the API check: the zygote imports the project on the
        # other core meanwhile (worker/runtime/early_zygote.py)
        from worker.runtime import early_zygote

        early_zygote.spawn(given[1:])
    args = build_parser().parse_args(argv)
    command: Command = args.func
    try:
        # the environment once, then the flags; a bad value ends here, naming the variable
        settings = CliSettings.from_env().with_flags(args)
        return int(command(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = _expected(exc)
        if message is None:
            raise
        print(f"trigger {args.command}: {message}", file=sys.stderr)
        return 1


def _expected(exc: Exception) -> str | None:
    """One line for the failures a user causes and can fix; None for bugs (a traceback)."""
    if isinstance(exc, SettingsError):
        return str(exc)
    try:
        import psycopg

        if isinstance(exc, psycopg.OperationalError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"cannot connect to Postgres: {first}"
    except ImportError:
        pass
    try:
        import httpx

        if isinstance(exc, httpx.TransportError):
            return f"cannot reach the API: {exc}"
    except ImportError:
        pass
    from worker.runtime.discovery import DiscoveryError

    if isinstance(exc, DiscoveryError):
        return str(exc)
    return None


if __name__ == "__main__":
    sys.exit(main())
