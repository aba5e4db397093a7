"""Alembic migrations for the SQL datastore (run at start by ..migrate)."""
