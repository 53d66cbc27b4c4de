"""The run engine: Postgres schema and migrations, run state machine, leases, notifications.

Only the API (``worker.api``) and the CLI import this package; task code never does.
"""
