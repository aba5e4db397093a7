"""The ``plastron-server`` command line (SPIRE's verbs and single-dash flags)."""
