"""Config machinery both runtimes share: the document reader (HCL1/JSON, ``-expandEnv``), typed
block reading, plugin blocks, the shared sections, durations and secret references. The
runtimes' own configs are :mod:`plastron.server.config` and :mod:`plastron.agent.config`."""
