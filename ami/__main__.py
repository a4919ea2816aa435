"""`python -m ami`: the subcommands live in ami/cli.py."""

from ami.cli import main

raise SystemExit(main())
