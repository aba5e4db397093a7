"""``plastron-agent`` command line."""
