"""Machine presets (docs/triggerdev-semantics.md, "Machines"): vCPUs and GiB of memory."""

MACHINE_PRESETS: dict[str, dict[str, float]] = {
    "micro": {"cpu": 0.25, "memory": 0.25},
    "small-1x": {"cpu": 0.5, "memory": 0.5},
    "small-2x": {"cpu": 1, "memory": 1},
    "medium-1x": {"cpu": 1, "memory": 2},
    "medium-2x": {"cpu": 2, "memory": 4},
    "large-1x": {"cpu": 4, "memory": 8},
    "large-2x": {"cpu": 8, "memory": 16},
}
DEFAULT_MACHINE = "small-1x"
