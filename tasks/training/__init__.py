"""Training the pool: pool planning and keys, masks, shadow models (plain, batched, fast, DP-SGD), augmentation, cost.

``pool`` (which patients a pool trains on, the pool key), ``pool_runner`` (the models a pool lacks, recovering
finished shards, the shadow jobs and their grouping into tasks, the failure policy), ``masks`` (complementary
IN/OUT masks and model seeds), ``shadow`` (train and score one shadow model), ``batched`` and ``fast``
(several models at once, device-resident inputs), ``dp`` (DP-SGD), ``augment`` and ``device_augment``,
``cost`` (FLOPs and record passes before training).

May import: models, tasks.attacks, tasks.risk, tasks.datasets, tasks.ingest and the foundation (tasks.config,
tasks.errors, tasks.results_layout). Never Prefect, Dask or DuckDB: the flows run these functions as tasks.
"""
