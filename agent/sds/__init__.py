"""Envoy SDS v3 on the agent's public socket (next to the Workload API)."""
