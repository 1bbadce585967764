"""The one validated configuration object of an audit.

Every knob of an audit lives here, so a run is fully described by one JSON/YAML document and
unknown keys (typos) are rejected instead of silently ignored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.results_layout import DEFAULT_RESULTS_DIR, db_path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainRecipe(_Strict):
    """How one shadow model is trained; part of the pool key (design D9)."""

    epochs: int = Field(60, ge=1)
    batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    warmup_fraction: float = Field(0.05, ge=0, le=1)
    # Paper's schedule: lr * cos(f * 7pi/16) with linear warm-up (method §2.2).
    schedule: Literal["cosine_7pi16", "cosine", "constant"] = "cosine_7pi16"
    ema_decay: float | None = Field(None, ge=0, lt=1)
    grad_accum_steps: int = Field(1, ge=1)
    # Image augmentation policy of tasks/training/augment.py (per-sample torchvision v2 transforms; identity for non-image data).
    augment: Literal["none", "flip", "weak", "medium", "strong"] = "none"
    standardize_inputs: bool = True
    # bf16 autocast and channels_last help conv nets on CPU (design D23: about 2x for WRN).
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    # Opacus DP-SGD; None = non-private.
    dp_epsilon: float | None = Field(None, gt=0)
    dp_clip_norm: float = Field(1.0, gt=0)
    dp_unit: Literal["record", "patient"] = "record"
    dp_delta: float | None = Field(None, gt=0, lt=1)  # default 1 / number of units
    # "adam"/"adamw" use ``momentum`` as beta1; "adam" couples weight decay to the gradient (L2), "sgd" and
    # "adamw" decay decoupled. Left out of the pool key when "sgd", so existing pools keep their keys.
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"

    @model_validator(mode="after")
    def _dp_optimizer(self) -> TrainRecipe:
        if self.dp_epsilon is not None and self.optimizer != "sgd":
            raise ValueError(f"DP-SGD training (dp_epsilon) runs momentum SGD; optimizer {self.optimizer!r} is not available with it")
        return self

    def key_dict(self) -> dict[str, Any]:
        """The recipe as it enters a pool key: fields added later are left out at their default, so
        a recipe that does not use them keeps the key it had before they existed."""
        data = self.model_dump(mode="json")
        if data["optimizer"] == "sgd":
            del data["optimizer"]
        return data


class ArchitectureSpec(_Strict):
    # None: the dataset's default architecture (its TaskSpec.default_architecture), filled in when the
    # AuditConfig is validated; the CLI sets one from the dataset's recipe preset (tasks/datasets/recipes.py).
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class PoolConfig(_Strict):
    """A pool: N models of one recipe on random patient halves (design D6, D7)."""

    n_models: int = Field(48, ge=4)
    seed: int = 0
    architecture: ArchitectureSpec = ArchitectureSpec()
    recipe: TrainRecipe = TrainRecipe()
    # Held-out targets for the aggregate attacks: the first n_targets models (complementary pairs),
    # so growing the pool never changes which models are targets.
    n_targets: int = Field(8, ge=0)
    eval_views: int = Field(1, ge=1, le=16)
    # The recipe preset the pool settings came from (`--recipe`; " (modified)" when overridden). Recorded
    # in the pools table, not part of the pool key: the key hashes the resulting architecture and recipe.
    recipe_preset: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_retired_score_split(cls, data: Any) -> Any:
        # ``score_split`` could only be "train" and nothing read it; configs, stored audits and Prefect
        # deployments written before it was retired still carry it, so that one value is accepted and dropped.
        if isinstance(data, dict) and data.get("score_split") == "train":
            return {k: v for k, v in data.items() if k != "score_split"}
        return data

    @field_validator("n_models")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"n_models must be even (masks come in complementary pairs), got {v}")
        return v

    @model_validator(mode="after")
    def _targets_fit(self) -> PoolConfig:
        if self.n_targets % 2:
            raise ValueError(f"n_targets must be even (complementary pairs), got {self.n_targets}")
        if self.n_models - self.n_targets < 4:
            raise ValueError(
                f"n_models={self.n_models} leaves fewer than 4 reference models after n_targets={self.n_targets} held-out targets"
            )
        return self


class AttackConfig(_Strict):
    fpr_points: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    min_models_per_side: int = Field(2, ge=2)


class ReportConfig(_Strict):
    risk_threshold: float = Field(0.9, gt=0.5, le=1.0)
    top_fraction: float = Field(0.01, gt=0, lt=1)
    min_cell: int = Field(10, ge=1)
    bootstrap_samples: int = Field(1000, ge=100)
    # The pool's swap null and FDR rule (docs/STATISTICS.md): a patient is at risk when risk >= risk_threshold
    # and its swap q-value <= fdr; swaps are seeded and recorded with the audit.
    fdr: float = Field(0.05, gt=0, lt=1)
    null_swaps: int = Field(100, ge=10, le=10_000)
    null_seed: int = 0
    # Evidence targets: chance share of the flagged patients, median 95% interval width of the top records.
    max_noise_share: float = Field(0.1, gt=0, lt=1)
    max_interval_width: float = Field(0.2, gt=0, le=1)


class AlertConfig(_Strict):
    """Limits a re-audit is checked against (flows/reaudit.py); crossing one emits the Prefect event
    ``medaudit.risk.limit-exceeded`` that an Automation routes to a notification (docs/OPERATIONS.md). None: no limit.
    Not part of the audit key: changing a limit does not re-audit."""

    max_share_above: float | None = Field(None, ge=0, le=1)  # share of scored patients with risk >= report.risk_threshold
    max_patients_at_risk: int | None = Field(None, ge=0)  # patients at risk beyond chance (FDR) where known, else above threshold
    max_rise: float | None = Field(None, ge=0)  # rise of that share since the previous audit of the same data
    max_lira_auc: float | None = Field(None, ge=0, le=1)  # aggregate LiRA AUC over the held-out targets


class ExecutionConfig(_Strict):
    dask_address: str | None = None
    n_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    # Torch threads inside each worker process; 1 avoids oversubscribing shared cores.
    torch_threads: int = Field(1, ge=1)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    # Dask resources each training task claims (a worker offers them with `dask worker --resources
    # GPU=1`); None: {"GPU": 1} when device is "cuda", else none. Not part of the pool key.
    task_resources: dict[str, float] | None = None
    # Shadow models trained together in one task (tasks/training/batched.py: torch.func vmap over the
    # models; MLP-like tabular nets only, others loop). 1 = one task per model. Not part of the pool key.
    models_per_task: int = Field(1, ge=1)
    # The fast training path (tasks/training/fast.py: inputs resident on the device, augmentation drawn
    # there, no per-step host sync, foreach/fused updates; a worker keeps data and model across the pool's
    # models) and torch.compile within it; "auto": both on where training runs on CUDA (3.2x today's loop for
    # WRN-28-2 on an H200, docs/PERFORMANCE.md), off on the CPU. Same recipe semantics: not part of the pool key.
    fast_path: bool | Literal["auto"] = "auto"
    compile: Literal["auto", "on", "off"] = "auto"

    @property
    def training_resources(self) -> dict[str, float]:
        """The Dask resources a shadow-model task needs (see ``task_resources``)."""
        if self.task_resources is not None:
            return dict(self.task_resources)
        return {"GPU": 1.0} if self.device == "cuda" else {}


class AuditedModelConfig(_Strict):
    """An existing model to audit (``medaudit audit-model``): the model or its logits, and its members.

    Exactly one of ``model_path`` (TorchScript, or a state dict with ``architecture``) and
    ``logits_path`` (Parquet/CSV: source_file, source_row, logit columns[, view]) is given.
    ``members_path`` (CSV/Parquet) lists what the model was trained on: a ``patient_id`` column (raw
    ids, hashed on read like at ingest; all the patient's records count) or ``source_file`` +
    ``source_row`` columns (single records).
    """

    model_path: Path | None = None
    architecture: ArchitectureSpec | None = None
    logits_path: Path | None = None
    members_path: Path
    # The model's input contract (docs/AUDIT_MODEL.md): None = medaudit's derived features of the dataset
    # (`medaudit datasets --features D`), else these columns of the dataset's raw table, in this order,
    # read from the raw files at each record's source_file/source_row.
    input_columns: tuple[str, ...] | None = None
    # Empty raw-column cells: the member records' mean of the column, or 0 (derived features are imputed by the adapter).
    input_imputation: Literal["member_mean", "zero"] = "member_mean"
    # Tabular inputs standardised with the member records' mean/std (as medaudit's shadow models are), or
    # as they are; a model that standardises itself wants "none".
    input_standardization: Literal["members", "none"] = "members"
    # Logit columns of logits_path, one per task output in the task's label order (default logit_0..logit_{C-1}).
    # For a binary task, two columns NEG,POS (a two-class softmax head) are read as the logit POS - NEG.
    logit_columns: tuple[str, ...] | None = None
    # Records without a logit are an error unless allowed; then they are left out and counted.
    allow_missing: bool = False
    # Sanity gate: the model's task AUROC (binary, multilabel: mean over labels) on its own non-members
    # must reach this; multiclass accuracy must beat the majority class. ``force`` audits anyway.
    min_auroc: float = Field(0.55, ge=0.5, lt=1.0)
    # ... and may fall at most this far below a logistic regression on the dataset's derived features,
    # fitted on the same members (tabular tasks); wrong inputs leave a model working, but far worse.
    max_baseline_gap: float = Field(0.15, gt=0, le=1.0)
    force: bool = False
    # False discovery rate of the member-patient verdicts (Benjamini-Hochberg over empirical p-values).
    fdr: float = Field(0.05, gt=0, lt=1)
    # A second reference pool trained with this recipe (like the audited model); the headline then
    # reports the verdict against both pools.
    reference_recipe: TrainRecipe | None = None
    # Offline LiRA variance: per record (needs many OUT references), one pooled value (the LiRA paper's
    # choice below ~64 references), or auto: per record once the median OUT count reaches 16.
    variance: Literal["auto", "per_record", "fixed"] = "auto"
    name: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> AuditedModelConfig:
        if (self.model_path is None) == (self.logits_path is None):
            raise ValueError("give exactly one of model_path (TorchScript or state dict) and logits_path")
        if self.logits_path is not None and self.architecture is not None:
            raise ValueError("architecture is for a state-dict model_path; exported logits need none")
        if self.logits_path is not None and self.input_columns is not None:
            raise ValueError("input_columns describe what a model_path is fed; exported logits need none")
        if self.model_path is not None and self.logit_columns is not None:
            raise ValueError("logit_columns name columns of a logits_path file")
        if self.input_columns is not None and (not self.input_columns or len(set(self.input_columns)) != len(self.input_columns)):
            raise ValueError("input_columns must name at least one column, each once")
        return self


class AuditConfig(_Strict):
    dataset: str
    raw_dir: Path
    results_dir: Path = DEFAULT_RESULTS_DIR
    pool: PoolConfig = PoolConfig()
    attack: AttackConfig = AttackConfig()
    report: ReportConfig = ReportConfig()
    execution: ExecutionConfig = ExecutionConfig()
    alerts: AlertConfig = AlertConfig()
    # Extra per-dataset adapter options (e.g. split seed); validated by the adapter.
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    # Set for `medaudit audit-model` (the YAML key `target` names the audited model, as in membership-inference
    # usage; code and tables call it the model audit): the pool is then the reference models of that audit.
    target: AuditedModelConfig | None = None

    @model_validator(mode="after")
    def _default_architecture(self) -> AuditConfig:
        """No architecture named: the dataset's default (never an MLP on images or signals)."""
        if self.pool.architecture.name is None:
            from tasks.datasets.base import dataset_default_architecture

            name = dataset_default_architecture(self.dataset)
            if name is not None:  # an unknown dataset fails where it is read, naming the registered ones
                arch = self.pool.architecture.model_copy(update={"name": name})
                object.__setattr__(self, "pool", self.pool.model_copy(update={"architecture": arch}))
        return self

    @classmethod
    def from_file(cls, path: Path) -> AuditConfig:
        return cls.model_validate(cls.read_file(path))

    @staticmethod
    def read_file(path: Path) -> dict[str, Any]:
        """A YAML/JSON config file as a dict, not yet validated (the CLI adds dataset and raw_dir)."""
        path = Path(path)
        text = path.read_text()
        data = yaml.safe_load(text) if path.suffix in {".yaml", ".yml"} else json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: an audit configuration is a mapping of settings, found {type(data).__name__}")
        return data

    @property
    def db_path(self) -> Path:
        return db_path(self.results_dir)


def stable_hash(obj: Any, length: int = 16) -> str:
    """Content hash of a JSON-serialisable object (sorted keys), hex."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
