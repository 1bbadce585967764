"""Re-audits (design D20): audit again only when the snapshot, pool or settings changed; train only missing models."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import pytest
import yaml

from deployments.reaudit import deployments_from_file
from flows.reaudit import load_audit_config
from tasks.audit.reaudit import audit_key_of, decide, reusable_audit
from tasks.config import AuditConfig
from tests.helpers.processes import free_port

REPO = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, **pool: Any) -> AuditConfig:
    return AuditConfig.model_validate(
        {
            "dataset": "mimic-iv-ed",
            "raw_dir": str(tmp_path / "raw"),
            "results_dir": str(tmp_path),
            "pool": {"n_models": 8, "n_targets": 2, **pool},
        }
    )


def _latest(cfg: AuditConfig, pool_key: str, version: str, **changes: Any) -> dict[str, Any]:
    row = {
        "audit_id": "old",
        "pool_key": pool_key,
        "dataset_version": version,
        "n_models": cfg.pool.n_models,
        "n_targets": cfg.pool.n_targets,
        "config": cfg.model_dump(mode="json"),
        "audit_key": audit_key_of(cfg, pool_key),
    }
    return {**row, **changes}


def test_decide_explains_what_changed(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert decide(cfg, "p1", "v1", None, force=False)[0]
    run, reason = decide(cfg, "p1", "v1", _latest(cfg, "p1", "v1"), force=False)
    assert not run and "unchanged since audit old" in reason
    assert decide(cfg, "p1", "v1", _latest(cfg, "p1", "v1"), force=True) == (True, "forced")

    old = _latest(cfg, "p0", "v0", audit_key="k0")
    run, reason = decide(cfg, "p1", "v1", old, force=False)
    assert run and "dataset snapshot v0 -> v1" in reason

    old = _latest(cfg, "p0", "v1", audit_key="k0")
    run, reason = decide(cfg, "p1", "v1", old, force=False)
    assert run and "pool p0 -> p1" in reason

    grown = _cfg(tmp_path, n_models=12)
    run, reason = decide(grown, "p1", "v1", _latest(cfg, "p1", "v1"), force=False)
    assert run and "pool size 8 -> 12 models" in reason

    stricter = AuditConfig.model_validate({**cfg.model_dump(mode="json"), "report": {"risk_threshold": 0.95}})
    run, reason = decide(stricter, "p1", "v1", _latest(cfg, "p1", "v1"), force=False)
    assert run and "report settings" in reason


def test_audit_key_ignores_where_and_how_it_runs(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    moved = AuditConfig.model_validate({**cfg.model_dump(mode="json"), "execution": {"dask_address": "tcp://127.0.0.1:8786"}})
    assert audit_key_of(cfg, "p") == audit_key_of(moved, "p")
    assert audit_key_of(cfg, "p") != audit_key_of(cfg, "q")
    assert audit_key_of(cfg, "p") != audit_key_of(_cfg(tmp_path, n_models=10), "p")


def test_shipped_deployments_file_builds_cron_deployments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    deps = deployments_from_file(REPO / "deployments" / "schedules.yaml")
    assert [d.name for d in deps] == ["mimic-iv-ed-nightly"]
    dep = deps[0]
    assert dep.schedules[0].schedule.cron == "0 3 * * *"
    assert dep.entrypoint == "flows.reaudit.reaudit_flow"
    cfg = AuditConfig.model_validate(dep.parameters["config"])
    assert cfg.raw_dir == tmp_path / "results/demo_data/mimic-iv-ed/n2000_seed0" and cfg.raw_dir.is_absolute()
    assert cfg.results_dir == tmp_path / "results"


def test_demo_audit_file_matches_the_demo_pool() -> None:
    """deployments/demo-audit.yaml re-audits what `medaudit demo` built: same pool, so the first run trains nothing."""
    from tasks.synthetic.demo_pools import demo_pool

    cfg = AuditConfig.from_file(REPO / "deployments" / "demo-audit.yaml")
    pool = demo_pool("mimic-iv-ed")
    assert cfg.pool.architecture.model_dump() == {**{"params": {}}, **pool["architecture"]}
    expected = AuditConfig.model_validate({"dataset": "x", "raw_dir": ".", "pool": {"recipe": pool["recipe"]}}).pool.recipe
    assert cfg.pool.recipe == expected


def test_serve_needs_a_server(tmp_path: Path, helpers: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "")  # recorded, so the original is restored afterwards
    monkeypatch.delenv("PREFECT_API_URL")
    cfg = tmp_path / "a.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": "mimic-iv-ed", "raw_dir": str(tmp_path)}))
    assert helpers.run_cli(["serve", "--config", str(cfg)])[0] == 2
    assert "medaudit server" in capsys.readouterr().err
    port = free_port()  # nothing listens there
    assert helpers.run_cli(["serve", "--config", str(cfg), "--api-url", f"http://127.0.0.1:{port}/api"])[0] == 2
    assert "no Prefect server answers" in capsys.readouterr().err
    assert "PREFECT_API_URL" not in os.environ  # a failed serve leaves this process as it was


def _audit_count(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT count(*) FROM audits").fetchall()[0][0]


def _models(db: Path) -> dict[str, list[int]]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT pool_key, model_idx FROM models ORDER BY pool_key, model_idx").fetchall()
    out: dict[str, list[int]] = {}
    for pool, idx in rows:
        out.setdefault(pool, []).append(idx)
    return out


def _stored_config(demo_audit: dict[str, Any], tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The demo audit's stored config, as a dict and written to a YAML file."""
    with duckdb.connect(str(demo_audit["results"] / "medaudit.duckdb"), read_only=True) as con:
        stored = con.execute("SELECT config FROM audits WHERE audit_id = ?", [demo_audit["audit_id"]]).fetchall()[0][0]
    config = json.loads(stored) if isinstance(stored, str) else stored
    cfg_file = tmp_path / "audit.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    return config, cfg_file


@pytest.mark.slow
def test_a_demo_rerun_reuses_its_audit(demo_audit: dict[str, Any], helpers: SimpleNamespace, tmp_path: Path) -> None:
    """The same `medaudit demo` again (before the heavy test below audits other settings into this folder): the
    re-audit rule finds nothing changed, so the demo's audit is shown, no audit row added, nothing recomputed."""
    results = demo_audit["results"]
    db = results / "medaudit.duckdb"
    n_audits = _audit_count(db)
    code, out = helpers.run_cli([*helpers.demo_args, "--results", str(results)])
    assert code == 0, out
    again = helpers.json_tail(out)
    assert again["reused"] and again["audit_id"] == demo_audit["audit_id"] and again["headline"]["trained"] == 0
    assert again["headline"]["n_patients"] == demo_audit["result"]["headline"]["n_patients"]
    assert _audit_count(db) == n_audits
    _config, cfg_file = _stored_config(demo_audit, tmp_path)
    changed = load_audit_config(cfg_file).model_dump(mode="json")
    changed["report"]["min_cell"] += 1  # a changed setting is audited again
    assert reusable_audit(load_audit_config(cfg_file)) is not None and reusable_audit(AuditConfig.model_validate(changed)) is None


@pytest.mark.slow
@pytest.mark.heavy
def test_reaudits_train_only_what_changed(demo_audit: dict[str, Any], helpers: SimpleNamespace, tmp_path: Path) -> None:
    results = demo_audit["results"]
    db = results / "medaudit.duckdb"
    config, cfg_file = _stored_config(demo_audit, tmp_path)
    assert load_audit_config(cfg_file).results_dir == results.resolve()

    def reaudit(*extra: str) -> dict[str, Any]:
        code, out = helpers.run_cli(["reaudit", "--config", str(cfg_file), "--no-progress", "--json", *extra])
        assert code == 0, out
        return helpers.json_tail(out)

    # 1. the config the demo ran: nothing changed, nothing trained, no new audit
    r = reaudit()
    assert (r["ran"], r["trained"], r["audit"]) == (False, 0, None), r["reason"]
    assert r["pool_key"] == demo_audit["pool_key"] and r["previous_audit_id"] == demo_audit["audit_id"]
    assert _models(db) == {demo_audit["pool_key"]: list(range(8))}

    # 2. one recipe field changed: a new pool, all its 8 models trained; the old pool untouched
    epochs = 5 if config["pool"]["recipe"]["epochs"] != 5 else 6
    r = reaudit("--epochs", str(epochs))
    assert r["ran"] and r["trained"] == 8, r["reason"]
    new_pool = r["pool_key"]
    assert new_pool != demo_audit["pool_key"] and f"pool {demo_audit['pool_key']} -> {new_pool}" in r["reason"]
    assert _models(db) == {demo_audit["pool_key"]: list(range(8)), new_pool: list(range(8))}

    # 3. the pool grown from 8 to 12 models: exactly the 4 new ones trained
    r = reaudit("--epochs", str(epochs), "--models", "12")
    assert r["ran"] and r["trained"] == 4 and r["pool_key"] == new_pool, r["reason"]
    assert "pool size 8 -> 12 models" in r["reason"]
    assert r["audit"]["headline"]["n_models"] == 12
    assert _models(db) == {demo_audit["pool_key"]: list(range(8)), new_pool: list(range(12))}

    # 4. and again unchanged: skipped
    r = reaudit("--epochs", str(epochs), "--models", "12")
    assert not r["ran"] and r["trained"] == 0 and r["pool_key"] == new_pool
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM audits").fetchall()[0][0] >= 3
