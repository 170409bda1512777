"""`python -m cxr ...`: see cxr/cli/main.py."""

from cxr.cli.main import main

raise SystemExit(main())
