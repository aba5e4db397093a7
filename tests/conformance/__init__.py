"""Reusable conformance suites that every implementation of a plugin interface runs."""
