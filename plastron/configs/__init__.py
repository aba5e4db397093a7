"""Building blocks of :mod:`plastron.config`: durations, typed block reading, plugin blocks,
environment expansion and secret references."""
