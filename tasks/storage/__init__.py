"""Storage: the results database (DuckDB) and owner-only files.

``store`` (``AuditStore``: schema, views, writes and reads of every table), ``sealed`` (owner-only
folders and files, the read-only SQL connection of `medaudit sql`).

May import: tasks.ingest, tasks.errors. The only package that holds SQL text.
"""
