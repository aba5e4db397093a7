"""Workload attestors: facts (selectors) about a Workload API caller, from the kernel."""
