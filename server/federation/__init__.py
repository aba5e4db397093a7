"""Federation: the SPIFFE bundle endpoint (server and client) and federation relationships."""
