"""The development kit behind ``plastron-dev up|down`` and the ``plastron.testing`` pytest plugin.

It runs Plastron for a user's CI the way production runs it: a server whose CA key lives in a
fresh SoftHSM2 token and an agent attested by a fresh swtpm (or a join token), each a separate
``python -m plastron.{server,agent}.cli.main`` process. The kit never imports the server, the
agent or the hardware rooms: it drives them through their command lines, as a user would.
"""
