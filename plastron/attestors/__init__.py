"""Node attestation methods; each module holds both halves (server and agent) of one method."""
