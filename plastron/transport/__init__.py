"""gRPC transport: grpclib servers and channels, SPIFFE TLS, peer identity."""
