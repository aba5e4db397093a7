"""UpstreamAuthority ``disk`` (the protocol is :mod:`plastron.upstream`)."""
