"""The ``x509pop`` attestation method (SPIRE's formats), both halves: a node proves possession
of the private key of an X.509 certificate issued to it out of band.

- :mod:`.wire`: the payload, challenge and response JSON and the proof-of-possession signature;
- :mod:`.config`: both halves' ``plugin_data`` and the agent ID path rule;
- :mod:`.template`: ``agent_path_template``, a safe subset of Go text/template;
- :mod:`.server`: the server half (chain verification, challenge, agent ID, selectors);
- :mod:`.agent`: the agent half (the chain from files, the node key from a file or a key URI);
- :mod:`.plugin`: registration with the core NodeAttestor registries.
"""
