"""Orchestration: the Prefect flows and the `medaudit` command line; no audit logic lives here.

``audit`` (ingest -> shadow models on Dask -> attacks -> report), ``audit_model`` (`medaudit audit-model`),
``reaudit`` (audit again when something changed), ``steps`` (the Prefect task wrappers), ``runtime``,
``monitoring``, ``alerts``, ``options`` (the CLI's shared options), ``cli`` and ``commands/``. A flow calls
plain functions of tasks/ in order and hands their results on; what to train, how shards are recovered,
when a run fails, what is stored and what a re-audit decides live in tasks/ where they are tested alone.

May import: models and every tasks/ package (docs/ARCHITECTURE.md).
"""
