"""The SPIFFE Workload API served by the agent on its Unix socket."""
