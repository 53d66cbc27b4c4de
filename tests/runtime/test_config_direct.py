"""``define_config`` checks plain values itself and leaves the rest to pydantic's models
(worker/sdk/config.py, docs/cold-start.md): whichever path a config takes, its values and its
errors are those of the models."""

from __future__ import annotations

from typing import Any

import pytest

from worker.sdk import config as cfg
from worker.sdk.config import Config, ConfigError, RetriesConfig


class _Instrumentor:
    def instrument(self, **_: Any) -> None:
        pass


class _Exporter:
    def export(self, spans: Any) -> None:
        pass


CASES: list[dict[str, Any]] = [
    {}, {"project": ""}, {"project": 1},
    {"max_duration": 60}, {"max_duration": 60.5}, {"max_duration": "60"}, {"max_duration": 4},
    {"max_duration": True}, {"max_duration": float("nan")},
    {"concurrency": 5}, {"concurrency": True}, {"concurrency": 0}, {"concurrency": 1001},
    {"concurrency": "5"}, {"concurrency": 5.0},
    {"dirs": ["a", "b"]}, {"dirs": ("a",)}, {"dirs": ["a", 1]},
    {"retries": {"enabled_in_dev": False, "default": {"max_attempts": 1}}},
    {"retries": {"default": {"min_timeout_in_ms": 10}}}, {"retries": {"default": None}},
    {"retries": {"enabled_in_dev": "yes"}}, {"retries": {"default": {"min_timeout": 1}}},
    {"retries": {"bogus": 1}}, {"retries": RetriesConfig(enabled_in_dev=False)},
    {"machine": "large-1x"}, {"machine": "huge"}, {"log_level": "warn"}, {"log_level": "loud"},
    {"ttl": "1h"}, {"ttl": 60}, {"ttl": True}, {"ttl": 1.5},
    {"max_runs_per_process": 0}, {"max_memory_per_process": 512},
    {"max_memory_per_process": "512"},
    {"build": {"system_packages": ["ffmpeg"], "pip_packages": ["httpx>=0.27"], "files": ["d"],
               "base_image": "python:3.12-slim"}},
    {"build": {"system_packages": ["FFMPEG"]}}, {"build": {"pip_packages": ["a;b"]}},
    {"build": {"files": ["../x"]}}, {"build": {"worker_requirement": "x`"}},
    {"build": {"nope": 1}},
    {"telemetry": {"instrumentations": [_Instrumentor()], "exporters": [_Exporter()],
                   "log_exporters": [_Exporter()], "resource": {"a": 1}, "enabled": False}},
    {"telemetry": {"instrumentations": [object()]}}, {"telemetry": {"exporters": [object()]}},
    {"telemetry": {"resource": {1: 2}}}, {"telemetry": {"enabled": "off"}},
    {"init": print}, {"middleware": 5}, {"projekt": "y"},
]


def _outcome(make: Any) -> Any:
    try:
        return make()
    except ConfigError as exc:
        return f"error: {exc}"


@pytest.mark.parametrize("options", CASES, ids=[repr(sorted(c.items()))[:60] for c in CASES])
def test_the_direct_path_gives_what_the_models_give(options: dict[str, Any]) -> None:
    given = {"project": "p", **options} if "project" not in options and options else options
    direct = _outcome(lambda: vars(Config(**given)))
    by_models = _outcome(lambda: cfg._by_pydantic(Config, given))
    assert direct == by_models
    if isinstance(direct, dict):
        assert {k: type(v) for k, v in direct.items()} == {
            k: type(v) for k, v in by_models.items()}


def test_a_config_is_a_plain_object_that_compares_and_prints_as_a_model_did() -> None:
    config = cfg.define_config(project="p", default_machine="large-1x",
                               retries={"default": {"min_timeout_in_ms": 10}})
    assert config == cfg.define_config(project="p", machine="large-1x",
                                       retries={"default": {"min_timeout_ms": 10}})
    assert config.retries.default == {"min_timeout_ms": 10}
    assert repr(config).startswith("Config(project='p', dirs=['trigger'], max_duration=3600, "
                                   "retries=RetriesConfig(enabled_in_dev=True, default=")
    coerced = cfg.define_config(project="p", max_duration="60", concurrency="4")
    assert (coerced.max_duration, coerced.concurrency) == (60.0, 4)
    assert type(coerced) is Config and type(coerced.retries) is RetriesConfig
