"""The server CA: X.509 CA and JWT signer in A/B slots, their journal, the rotator, signing.

Entry point: ``await ServerCA.open(config=..., key_manager=..., store=..., clock=...)``
(:mod:`.server_ca`), then ``asyncio.create_task(ca.rotator.run(stop))``; import each name from
the module that defines it.
"""
