"""Risk summaries built on per-record attack statistics (method §4.5-§4.9, design D14, D16, D17).

``roc`` (aggregate attack ROC / TPR at FPR), ``patient`` (patient-level aggregation), ``subgroup``
(subgroup tables, CIs, over-representation tests, small-cell suppression), ``survival`` (empirical
survival curves of risk) and ``dp_bounds`` (AUC bounds implied by DP). Pure numpy/scipy/pandas.

May import: tasks.attacks, tasks.errors. Never Prefect, Dask or DuckDB.
"""
