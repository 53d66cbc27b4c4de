import sys

from worker.runtime.lean_imports import skip_httpx_cli

skip_httpx_cli()  # before the CLI imports httpx

from worker.cli import main  # noqa: E402

sys.exit(main())
