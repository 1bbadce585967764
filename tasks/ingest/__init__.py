"""Ingest: a dataset's raw files -> a versioned, validated Parquet snapshot with pseudonymous patient keys.

``snapshot`` (build and open snapshots), ``pseudonym`` (the keyed hash of raw patient ids and the
owner-only linkage file), ``cache`` (skip ingest when the raw folder is unchanged).

May import: tasks.datasets and the foundation (tasks.config, tasks.errors, tasks.results_layout). Never
Prefect, Dask or DuckDB.
"""
