"""tasks/audit/model_run.py: what the audited model is called and how it came, the row a model audit stores,
and the verdict keys compared between two reference pools."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.audit.model_loading import file_digest
from tasks.audit.model_run import VERDICT_KEYS, model_audit_row, model_kind, model_name, require_target, verdict
from tasks.config import AuditConfig, AuditedModelConfig
from tasks.errors import ConfigError


def _target(tmp_path: Path, **kw: object) -> AuditedModelConfig:
    members = tmp_path / "members.csv"
    members.write_text("patient_id\np1\n")
    return AuditedModelConfig.model_validate({"members_path": str(members), **kw})


def test_kind_and_name_of_each_way_a_model_comes(tmp_path: Path) -> None:
    logits = _target(tmp_path, logits_path=str(tmp_path / "out" / "logits.parquet"))
    assert (model_kind(logits), model_name(logits)) == ("logits", "logits.parquet")
    assert model_kind(_target(tmp_path, model_path=str(tmp_path / "m.pt2"))) == "torch_export"
    assert model_kind(_target(tmp_path, model_path=str(tmp_path / "m.pt"))) == "torchscript"
    state = _target(tmp_path, model_path=str(tmp_path / "m.pt"), architecture={"name": "mlp"}, name="triage v2")
    assert (model_kind(state), model_name(state)) == ("state_dict", "triage v2")


def test_the_stored_row_names_the_model_its_files_and_the_references(tmp_path: Path) -> None:
    logits = tmp_path / "logits.csv"
    logits.write_text("source_file,source_row,logit_0\na.csv,1,0.5\n")
    cfg = AuditConfig.model_validate(
        {
            "dataset": "mimic-iv-ed",
            "raw_dir": str(tmp_path),
            "results_dir": str(tmp_path / "results"),
            "pool": {"n_models": 8, "n_targets": 0},
            "target": _target(tmp_path, logits_path=str(logits)).model_dump(mode="json"),
        }
    )
    row = model_audit_row(cfg, "pool1", "v1", "run-9")
    assert row["target_name"] == "logits.csv" and row["target_kind"] == "logits"
    assert row["target_digest"] == file_digest(logits) and row["members_digest"] == file_digest(tmp_path / "members.csv")
    assert (row["pool_key"], row["dataset_version"], row["n_references"], row["flow_run_id"]) == ("pool1", "v1", 8, "run-9")
    assert row["config"]["target"]["logits_path"] == str(logits)


def test_no_target_is_a_config_error_and_the_verdict_keeps_its_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="audit-model needs a target"):
        require_target(AuditConfig.model_validate({"dataset": "mimic-iv-ed", "raw_dir": str(tmp_path)}))
    v = verdict({"n_member_patients_at_risk": 3, "other": 1})
    assert list(v) == list(VERDICT_KEYS) and v["n_member_patients_at_risk"] == 3 and v["lira_offline_auc"] is None
