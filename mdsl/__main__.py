"""`python -m mdsl`: the same as the `mdsl` command."""

from mdsl.cli import main

raise SystemExit(main())
