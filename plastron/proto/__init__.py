"""Wire contracts: .proto sources and their generated code (see generate.py)."""
