"""`python -m deploy`: the subcommands live in deploy/cli.py."""

from deploy.cli import main

raise SystemExit(main())
