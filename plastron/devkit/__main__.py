"""``python -m plastron.devkit up|down`` (what the ``plastron-dev`` console script runs)."""

from plastron.devkit.cli import main

raise SystemExit(main())
