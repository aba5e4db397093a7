"""Wire conversions: SPIRE API messages (spire.api.types) ↔ Plastron's typed values, and the
protocol limits every end checks. Used by the server API, the server CLI and the agent; import
each name from the module that defines it."""
