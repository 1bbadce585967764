"""The audits: stored scores -> attacks and risk tables, for a pool and for one existing model.

``pool_audit`` (the pool audit: score blocks from the store through tasks/attacks and tasks/risk into result
frames), ``model_audit`` (the audit of one existing model, `medaudit audit-model`), with ``model_loading``
(its model, logits and members), ``model_inputs`` (its input contract) and ``model_sanity`` (the sanity gate),
``model_run`` (its preflight, stored row, tables and headline), ``gate`` (`medaudit gate`'s checks),
``reaudit`` (the re-audit policy), ``dp_sweep`` and ``scaling`` (the study rows), ``explain`` (why one patient
is exposed) and ``simulate`` (simulated pools with planted patients: ground truth for the swap null and the
FDR rule).

May import: tasks.attacks, tasks.risk, tasks.training, tasks.storage, tasks.ingest, tasks.datasets, models and
the foundation (tasks.config, tasks.errors, tasks.results_layout). Never Prefect, Dask or DuckDB.
"""
