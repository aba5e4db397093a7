"""``plastron.oidc``: the standalone OIDC discovery provider (``plastron-oidc-discovery``).

A third runtime beside the server and the agent: it reaches them only over their APIs (the
server's admin socket or an agent's Workload API socket), so it imports neither.
"""
