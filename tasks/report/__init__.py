"""Reports: plots, CSV exports and the self-contained HTML reports.

``pool_audit`` (the pool audit's report, plots and headline sentences), ``tables`` (subgroup display tables
and the risk-over-time plot), ``model_audit`` (the report of `medaudit audit-model`), ``dp_sweep`` and
``scaling`` (the studies' plots).

May import: tasks.audit (its result types), tasks.attacks, tasks.risk, tasks.storage and the foundation
(tasks.config, tasks.errors, tasks.results_layout). Never Prefect, Dask or DuckDB.
"""
