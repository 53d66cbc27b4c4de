import sys

if sys.argv[1:2] == ["worker"]:  # first: see worker/runtime/early_zygote.py
    from worker.runtime import early_zygote

    early_zygote.spawn(sys.argv[2:])

from worker.runtime.lean_imports import skip_httpx_cli

skip_httpx_cli()  # before the CLI imports httpx

from worker.cli import main  # noqa: E402

sys.exit(main())
