"""`medaudit audit-model` on models a team trained *outside* medaudit: plain torch, its own features
(the raw numeric columns of the synthetic MIMIC-IV-ED master_dataset.csv, empty cells as 0, its own
standardisation inside the model), half of all patients as members. Each silent or late failure of
issue #17 is refused before any reference model is trained, with the message a user sees, or handled.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from flows.cli import main
from tasks.synthetic.mimic_iv_ed import write_ed_cohort

NOT_INPUTS = {"subject_id", "hadm_id", "stay_id", "outcome_hospitalization"}
FEW = ["age", "triage_acuity", "triage_heartrate", "triage_o2sat", "triage_sbp", "triage_resprate", "n_hosp_365d", "n_ed_365d"]
REF_RECIPE = {"epochs": 20, "batch_size": 64, "learning_rate": 0.02, "weight_decay": 0.0}
REF_ARCH = {"name": "mlp", "params": {"width": 64, "depth": 2}}


class TeamNet(nn.Module):
    """The team's model: standardises its raw inputs itself (buffers), then an MLP."""

    def __init__(self, mu: np.ndarray, sd: np.ndarray, width: int, depth: int):
        super().__init__()
        self.register_buffer("mu", torch.tensor(mu))
        self.register_buffer("sd", torch.tensor(sd))
        layers: list[nn.Module] = []
        d = len(mu)
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mu) / self.sd)


def _fit(x: np.ndarray, y: np.ndarray, width: int, depth: int, epochs: int, lr: float, wd: float) -> TeamNet:
    torch.manual_seed(0)
    mu, sd = x.mean(0), x.std(0)
    net = TeamNet(mu, np.where(sd > 0, sd, 1).astype(np.float32), width, depth)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)[:, None]
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for b in range(0, len(xt), 64):
            i = perm[b : b + 64]
            loss = nn.functional.binary_cross_entropy_with_logits(net(xt[i]), yt[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The team's data, models (TorchScript), exported logits and members file; one results folder for
    every test, so the reference models are trained once and shared."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("team")
    raw = root / "raw"
    write_ed_cohort(raw, 400, seed=3)
    df = pd.read_csv(raw / "master_dataset.csv")
    cols = [c for c in df.columns if c not in NOT_INPUTS and pd.api.types.is_numeric_dtype(df[c])]
    x = df[cols].astype("float64").fillna(0.0).to_numpy(np.float32)
    y = df["outcome_hospitalization"].to_numpy(np.float32)
    patients = df["subject_id"].unique()
    members = set(np.random.default_rng(0).choice(patients, len(patients) // 2, replace=False).tolist())
    members |= set(df.loc[df["age"] < 18, "subject_id"])  # minors: quarantined at ingest, still on the team's list
    m = df["subject_id"].isin(members).to_numpy()
    pd.DataFrame({"patient_id": sorted(members)}).to_csv(root / "members.csv", index=False)
    # overfit: a wide MLP on all 63 columns, 200 epochs; regularised: a linear model on 8 of them, 20 epochs
    # (with 436 member rows even a small MLP on all columns tells members apart)
    few = [cols.index(c) for c in FEW]
    models = {"overfit": _fit(x[m], y[m], 256, 2, 200, 1e-3, 0.0), "regularised": _fit(x[m][:, few], y[m], 1, 0, 20, 1e-2, 0.1)}
    # the rows ingest accepts (adults, contract-valid): the team exports logits for these (docs/AUDIT_MODEL.md)
    from tasks.datasets import get_dataset
    from tasks.datasets.quarantine import Quarantine

    accepted_lines = set(get_dataset("mimic-iv-ed").read_records(raw, Quarantine())["_source_row"].astype(int))
    adult = np.isin(np.arange(len(df)) + 2, list(accepted_lines))
    keys = pd.DataFrame({"source_file": "master_dataset.csv", "source_row": np.arange(len(df)) + 2})
    out = {"root": root, "raw": raw, "results": root / "refusals", "cols": cols, "df": df, "member_rows": m, "adult": adult}
    for name, net in models.items():
        xin = x if name == "overfit" else x[:, few]
        with torch.no_grad():
            z = net(torch.from_numpy(xin))[:, 0].numpy()
        keys.assign(logit_0=z)[adult].to_csv(root / f"{name}_logits.csv", index=False)
        out[f"{name}_z"] = z
        torch.jit.trace(net, torch.from_numpy(xin[:4])).save(str(root / f"{name}.pt"))
    out["n_minor_only"] = len(members - set(df.loc[adult, "subject_id"]))  # member patients without an accepted record
    (root / "columns.txt").write_text("\n".join(cols) + "\n")
    config = {"pool": {"architecture": REF_ARCH, "recipe": REF_RECIPE}, "execution": {"n_workers": 2}}
    (root / "refs.json").write_text(json.dumps(config))
    return out


def _args(team: dict, results: Path, *source: str) -> list[str]:
    root = team["root"]
    return [
        "audit-model",
        "mimic-iv-ed",
        str(team["raw"]),
        *source,
        "--members",
        str(root / "members.csv"),
        "--models",
        "8",
        "--config",
        str(root / "refs.json"),
        "--results",
        str(results),
        "--no-progress",
    ]


def _refused(team: dict, capsys: pytest.CaptureFixture[str], results: Path, *source: str) -> str:
    """Run audit-model expecting exit 2 before any reference model exists; the error text."""
    assert main(_args(team, results, *source)) == 2
    err = capsys.readouterr().err
    db = results / "medaudit.duckdb"
    if db.exists():
        with duckdb.connect(str(db), read_only=True) as con:
            assert con.sql("SELECT count(*) FROM pool_models").fetchone()[0] == 0  # refused before reference training
    return " ".join(err.split())


def test_model_on_raw_columns_refused_before_ingest_with_expected_and_given_width(
    team: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 1: a model on 63 raw columns fed medaudit's 64 derived features."""
    err = _refused(team, capsys, tmp_path, "--model", str(team["root"] / "overfit.pt"))
    assert "overfit.pt: the model expects inputs of width 63 (its first layer), the input contract gives 64" in err
    assert "medaudit's derived features of mimic-iv-ed" in err and "--input-columns" in err and "TorchScript interpreter" not in err
    assert not (tmp_path / "snapshots").exists()  # before ingest
    # a column the raw table does not have: named, before ingest
    err = _refused(team, capsys, tmp_path, "--model", str(team["root"] / "overfit.pt"), "--input-columns", "age,triage_temp")
    assert "input columns ['triage_temp'] are not columns of master_dataset.csv" in err


def test_two_column_logits_refused_unless_mapped(team: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Case 3: a two-class head's logits (logit_0 = negative class) were read as the positive logit."""
    z = team["overfit_z"][team["adult"]]
    two = pd.read_csv(team["root"] / "overfit_logits.csv").assign(logit_0=-z / 2, logit_1=z / 2)
    two.to_csv(tmp_path / "two.csv", index=False)
    err = _refused(team, capsys, tmp_path / "r", "--logits", str(tmp_path / "two.csv"))
    assert "two.csv, column 'logit_1': has logit_0 and logit_1 for a binary task with one output" in err
    assert "--logit-columns logit_0,logit_1 (NEG,POS" in err
    assert not (tmp_path / "r" / "snapshots").exists()
    # mapped: the logit difference (and for softmax probabilities the log ratio) is the binary logit
    from tasks.audit.model_loading import parse_logits
    from tasks.datasets import get_dataset

    task = get_dataset("mimic-iv-ed").task
    parsed = parse_logits(tmp_path / "two.csv", task, 1, ("logit_0", "logit_1"))
    np.testing.assert_allclose(parsed.values[:, 0], z, rtol=1e-5, atol=1e-5)
    p1 = 1 / (1 + np.exp(-z.astype(np.float64)))
    two.assign(logit_0=1 - p1, logit_1=p1).to_csv(tmp_path / "softmax.csv", index=False)
    parsed = parse_logits(tmp_path / "softmax.csv", task, 1, ("logit_0", "logit_1"))
    assert "softmax probabilities" in parsed.note
    moderate = np.abs(z) < 10  # beyond, a float64 probability no longer tells 1 - p from 0
    np.testing.assert_allclose(parsed.values[moderate, 0], z[moderate], rtol=1e-3, atol=1e-3)


def test_logits_rows_checked_after_ingest_before_references(team: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Case 4: extra rows (records quarantined at ingest) and missing rows are refused up front."""
    df = team["df"]
    full = pd.DataFrame({"source_file": "master_dataset.csv", "source_row": np.arange(len(df)) + 2, "logit_0": team["overfit_z"]})
    full.to_csv(tmp_path / "all_rows.csv", index=False)
    quarantined = int((~team["adult"]).sum())
    err = _refused(team, capsys, team["results"], "--logits", str(tmp_path / "all_rows.csv"))
    assert f"{quarantined} of {len(df)} rows name no accepted record" in err and "quarantined at ingest" in err
    adult = full[team["adult"]]
    adult.sample(frac=0.8, random_state=0).to_csv(tmp_path / "partial.csv", index=False)
    n_missing = len(adult) - round(0.8 * len(adult))
    err = _refused(team, capsys, team["results"], "--logits", str(tmp_path / "partial.csv"))
    assert f"has no logits for {n_missing} of {len(adult)} accepted records" in err and "--allow-missing" in err


def test_sanity_gate_stops_wrong_inputs_and_flipped_logits(team: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Cases 1-3 that pass every shape check: double standardisation, 64 *other* columns, a flipped sign."""
    root = team["root"]
    results = team["results"]
    # the self-standardising model standardised again by medaudit
    err = _refused(team, capsys, results, "--model", str(root / "overfit.pt"), "--input-columns", f"@{root / 'columns.txt'}")
    assert "the audited model's AUROC on its own non-member records is" in err
    assert "inputs standardised twice or not at all" in err and "--force" in err
    # flipped logits
    flipped = pd.read_csv(root / "overfit_logits.csv").assign(logit_0=lambda d: -d["logit_0"])
    flipped.to_csv(tmp_path / "flipped.csv", index=False)
    err = _refused(team, capsys, results, "--logits", str(tmp_path / "flipped.csv"))
    assert "inverted (below chance)" in err and "logits flipped or mis-mapped" in err


def test_features_contract_is_documented(capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.datasets.ed_features import ED_FEATURES

    assert main(["datasets", "--features", "mimic-iv-ed"]) == 0
    out = capsys.readouterr().out
    rows = [ln.split() for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    assert [r[1] for r in rows] == list(ED_FEATURES)
    assert "°C, converted from the CSV's °F" in out and "training-split mean" in out


@pytest.mark.heavy
def test_overfit_and_regularised_models_against_their_own_non_members(
    team: dict, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Raw-column contract == --logits; overfit members significantly above non-members, regularised not;
    both show the sanity metric and the calibration check; excluded members and missing rows counted."""
    root = team["root"]
    results = tmp_path_factory.mktemp("shared_results")

    def run(*source: str) -> dict:
        assert main([*_args(team, results, *source), "--json"]) == 0
        out = capsys.readouterr().out
        return json.loads(out[out.index("{") :])

    contract = ["--input-columns", f"@{root / 'columns.txt'}", "--standardize", "none", "--imputation", "zero"]
    by_model = run("--model", str(root / "overfit.pt"), *contract)
    by_logits = run("--logits", str(root / "overfit_logits.csv"))
    reg = run("--logits", str(root / "regularised_logits.csv"))
    h, r = by_model["headline"], reg["headline"]
    assert h["trained"] == 8 and by_logits["headline"]["trained"] == 0 and r["trained"] == 0  # references shared
    with duckdb.connect(by_model["db_path"], read_only=True) as con:
        risk = {
            a: con.sql("SELECT risk FROM model_audit_record_risk WHERE audit_id = ? ORDER BY record_idx", params=[a]).fetchnumpy()["risk"]
            for a in (by_model["audit_id"], by_logits["audit_id"])
        }
        q = con.sql(
            "SELECT q_value FROM model_audit_patient_risk WHERE audit_id = ? AND member", params=[by_model["audit_id"]]
        ).fetchnumpy()
    np.testing.assert_allclose(risk[by_model["audit_id"]], risk[by_logits["audit_id"]], rtol=1e-4)
    assert int((q["q_value"] <= 0.05).sum()) == h["n_member_patients_significant"]
    # the overfit model leaks, measured against its own non-members; the regularised one does not
    assert h["members_above_non_members_p"] < 1e-3 and h["excess_patients_at_risk_ci"][0] > 0
    for label, hh in (("overfit", h), ("regularised", r)):  # the numbers behind docs/AUDIT_MODEL.md
        keys = ("sanity_non_members", "sanity_members", "lira_offline_auc", "n_member_patients_at_risk", "expected_by_chance")
        keys += ("excess_patients_at_risk_ci", "n_member_patients_significant", "members_above_non_members_p", "calibration")
        with capsys.disabled():
            print(label, {k: hh[k] for k in keys})
    assert r["members_above_non_members_p"] > 0.05 and r["excess_patients_at_risk_ci"][0] <= 0
    for hh in (h, r):
        assert hh["sanity_metric"] == "AUROC" and hh["sanity_passed"] and hh["sanity_non_members"] > 0.7
        assert [c["level"] for c in hh["calibration"]] == [0.5, 0.9, 0.99]
        assert hh["members_excluded_at_ingest"] == team["n_minor_only"] > 0
    html = Path(by_model["files"]["report_html"]).read_text()
    assert "model task metric" in html and "calibration check" in html and "non-member patients at risk &gt;= 0.5:" in html
    assert h["calibration_far_from_uniform"] and "the count at the threshold alone means little" in html
    # missing rows allowed: counted in the headline
    adult = pd.read_csv(root / "overfit_logits.csv")
    adult.sample(frac=0.8, random_state=0).to_csv(results / "partial.csv", index=False)
    part = run("--logits", str(results / "partial.csv"), "--allow-missing")["headline"]
    assert part["records_without_logits"] == len(adult) - round(0.8 * len(adult))


@pytest.mark.heavy
def test_references_matched_to_the_models_recipe(team: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--reference-recipe: a second pool trained like the model (AdamW); the headline compares both verdicts."""
    recipe = tmp_path / "adamw.yaml"
    recipe.write_text("optimizer: adamw\nepochs: 20\nbatch_size: 64\nlearning_rate: 0.001\nweight_decay: 0.01\n")
    args = [*_args(team, tmp_path / "r", "--logits", str(team["root"] / "regularised_logits.csv")), "--reference-recipe", str(recipe)]
    assert main([*args, "--json"]) == 0
    out = capsys.readouterr().out
    h = json.loads(out[out.index("{") :])["headline"]
    m = h["matched_references"]
    assert m["trained"] == 8 and m["pool_key"] != h["pool_key"] and m["recipe"]["optimizer"] == "adamw"
    assert {"n_member_patients_at_risk", "expected_by_chance", "n_member_patients_significant", "lira_offline_auc"} <= set(m)
    with capsys.disabled():
        print("matched", {k: m[k] for k in ("n_member_patients_at_risk", "expected_by_chance", "members_above_non_members_p")})
        print("default", {k: h[k] for k in ("n_member_patients_at_risk", "expected_by_chance", "members_above_non_members_p")})
    assert main(args) == 0  # the text headline has the comparison row
    assert "matched references  recipe adamw" in capsys.readouterr().out
