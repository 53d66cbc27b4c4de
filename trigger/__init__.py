"""The example project's tasks. Each module exports its tasks as public module-level names."""
