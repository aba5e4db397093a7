"""The ``sql`` DataStore (:class:`plastron.datastore.DataStore`; SPIRE's DataStore "sql"):
SQLite, PostgreSQL, MySQL/MariaDB.

:mod:`.plugin` reads its ``plugin_data`` and registers it, :mod:`.store` holds
:class:`~.store.SqlDataStore` and ``open_datastore``, :mod:`.config` its settings and connection
strings; the records it returns are core's (:mod:`plastron.records`). Import each name from its
module.
"""
