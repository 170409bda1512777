"""`python -m cxr ...`: see cxr/cli.py."""

from .cli import main

raise SystemExit(main())
