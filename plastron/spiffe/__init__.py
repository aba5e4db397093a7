"""SPIFFE standard types: IDs and trust domains (:mod:`.ids`), X509-SVIDs, JWT-SVIDs, bundles."""
