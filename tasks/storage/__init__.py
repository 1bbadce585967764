"""Storage: the results database (DuckDB) and owner-only files.

``store`` (``AuditStore``: schema, views, writes and reads of every table), ``sealed`` (owner-only folders and
files, the read-only SQL connection of `medaudit sql`), ``queries`` (parameterised reads of the commands and
the re-audit rule).

May import: tasks.ingest and the foundation (tasks.config, tasks.errors, tasks.results_layout). The only
package that holds SQL text or imports DuckDB.
"""
