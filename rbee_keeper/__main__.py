"""`python -m rbee_keeper` runs the CLI, as the `rbee-keeper` script does."""

from rbee_keeper.cli import main

raise SystemExit(main())
