"""`python -m bot` runs the same command line as the `planfix-bot` script."""

from bot.cli import main

raise SystemExit(main())
