"""The worker runtime: discovery, zygote, warm executors, supervisor, hot reload.

Entry point: :func:`worker.runtime.worker_main.run_worker` (imported lazily so that importing
this package stays cheap in the zygote and in executors).
"""
