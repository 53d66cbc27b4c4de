"""A worker replica's entry points: :func:`run_worker` (async, until ``stop``) and
:func:`main` (blocking, with uvloop and the stop signals), around
:class:`~worker.runtime.supervisor.Supervisor`."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from worker.runtime.settings import WorkerSettings
from worker.runtime.supervisor import EventSink, Supervisor

__all__ = ["main", "run_worker"]


async def run_worker(project_dir: Path, api_url: str, secret_key: str, *,
                     concurrency: int | None = None, watch: bool = False,
                     on_event: EventSink | None = None,
                     stop: asyncio.Event | None = None,
                     force: asyncio.Event | None = None,
                     settings: WorkerSettings | None = None) -> None:
    """Run a worker replica until ``stop`` is set (then shut down gracefully; setting
    ``force`` as well cuts the grace period short).

    ``settings`` default to :meth:`WorkerSettings.from_env`; the arguments given here win.
    Raises :class:`worker.runtime.zygote_process.DiscoveryFailed` when the project cannot be
    imported at boot (``str(exc)`` names the file and line), and
    :class:`worker.common.settings.SettingsError` for an unusable variable.
    """
    base = settings if settings is not None else WorkerSettings.from_env()
    supervisor = Supervisor(
        Path(project_dir),
        base.with_overrides(api_url=api_url, secret_key=secret_key, concurrency=concurrency),
        watch=watch, on_event=on_event, stop=stop or asyncio.Event(), force=force)
    await supervisor.run()


def main(project_dir: Path | str = ".", api_url: str | None = None,
         secret_key: str | None = None, *, concurrency: int | None = None,
         watch: bool = False, on_event: EventSink | None = None) -> None:
    """Blocking entry point: uvloop; SIGTERM/SIGINT → graceful stop, a second one → now."""
    import uvloop

    settings = WorkerSettings.from_env().with_overrides(
        api_url=api_url, secret_key=secret_key, concurrency=concurrency)

    async def _main() -> None:
        stop, force = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            (force if stop.is_set() else stop).set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await run_worker(Path(project_dir), settings.api_url, settings.secret_key,
                         watch=watch, on_event=on_event, stop=stop, force=force,
                         settings=settings)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_main())
