"""The HTTP API over the engine: public REST (Trigger.dev-compatible paths), worker protocol."""
