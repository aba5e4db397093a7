"""The server's gRPC API: SPIRE-compatible services, authorization, error mapping."""
