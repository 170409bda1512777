"""`python -m cxr ...`: see cxr/cli.py."""

from cxr.cli.main import main

raise SystemExit(main())
