"""The example project's configuration (``trigger dev`` / ``trigger worker`` read it)."""

from worker import define_config

config = define_config(
    project="example",
    dirs=["trigger"],
    max_duration=300,
    retries={
        "enabled_in_dev": True,
        "default": {
            "max_attempts": 3,
            "min_timeout_ms": 1000,
            "max_timeout_ms": 10000,
            "factor": 2,
            "randomize": True,
        },
    },
)
