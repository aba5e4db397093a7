"""The agent's admin socket: Debug, Logger and DelegatedIdentity."""
