"""The server's SQL datastore (SPIRE's DataStore "sql"): SQLite, PostgreSQL, MySQL/MariaDB.

:mod:`.store` holds the DataStore and ``open_datastore``, :mod:`.records` the rows it returns,
:mod:`.config` the ``sql`` plugin's settings; import each name from its module.
"""
