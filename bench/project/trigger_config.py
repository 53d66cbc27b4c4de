"""The benchmark project (our system): no-op tasks, no retries."""

from worker import define_config

config = define_config(project="bench", dirs=["trigger"], max_duration=60,
                       retries={"enabled_in_dev": False, "default": {"max_attempts": 1}})
