"""The agentless token exchange: SVIDs for platform credentials, without an agent."""
