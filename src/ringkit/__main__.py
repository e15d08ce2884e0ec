"""``python -m ringkit``: the same command as ``ringkit``."""

from ringkit.cli import main

raise SystemExit(main())
