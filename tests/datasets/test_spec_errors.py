"""Bad specs and bad data (docs/RELIABILITY.md, "Dataset specs"): every case with its exact message.

Spec errors name the spec file and the key path; data errors name the file and column; rows that
cannot be used are quarantined with a reason naming the column, never quoting an identifier.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.cli import main
from tasks.datasets import get_dataset
from tasks.datasets.quarantine import Quarantine
from tasks.errors import ConfigError, StructuralError
from tasks.ingest.snapshot import build_snapshot
from tasks.synthetic.own_data import EXAMPLES, write_clinic_visits, write_derm_images, write_ward_ecg

BASE = yaml.safe_load((EXAMPLES / "clinic_visits.yaml").read_text())
ALLOWED = "(allowed: column names, numbers, 'strings', lists, == != < <= > >=, in, not in, and, or, not, is_missing(column))"
INVALID = "invalid dataset spec:\n  key "


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(s: dict) -> None:
        *parents, last = path.split(".")
        node: Any = s
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is _DROP:
            node.pop(last)
        elif isinstance(node, list):
            node.append(value)
        else:
            node[last] = value

    return mutate


_DROP = object()

SPEC_CASES: list[tuple[str, Callable[[dict], None], str]] = [
    (
        "unknown key",
        lambda s: s.__setitem__("labels", s.pop("label")),
        INVALID
        + "label: required key is missing\n  key labels: unknown key (check the spelling; docs/dataset-spec.schema.json lists the keys)",
    ),
    (
        "unknown label kind",
        _set("label.kind", "regression"),
        INVALID + "label.kind: expected one of 'binary', 'multiclass', 'multilabel' (found 'regression')",
    ),
    (
        "categorical without categories",
        _set("inputs.features.4.categories", _DROP),
        INVALID + "inputs.features.4: a categorical feature needs its categories (the list fixes the model's input width)",
    ),
    (
        "filter calls a function",
        _set("filters.x", {"expr": "__import__('os').system('true')"}),
        INVALID
        + "filters.2: expr: filter \"__import__('os').system('true')\": the only function is is_missing(column) at column 1 "
        + ALLOWED,
    ),
    (
        "filter reaches an attribute",
        _set("filters.x", {"expr": "age.__class__ == 1"}),
        INVALID
        + "filters.2: expr: filter 'age.__class__ == 1': the left side of a comparison must be a column name at column 1 "
        + ALLOWED,
    ),
    ("filter syntax", _set("filters.x", {"expr": "age >= "}), INVALID + "filters.2: expr: cannot parse filter 'age >= ' (invalid syntax)"),
    (
        "filter without a condition",
        _set("filters.x", {"column": "age"}),
        INVALID + "filters.2: filter on column 'age' needs allowed, min or max",
    ),
    (
        "joined table without join_on",
        _set("tables.1.join_on", _DROP),
        INVALID + "tables.1.join_on: required for every table after the first (the key column shared with visits.csv)",
    ),
    (
        "table path leaves the data folder",
        _set("tables.0.path", "../visits.csv"),
        INVALID + "tables.0.path: expected a path relative to the data folder, without '..'",
    ),
    (
        "name of a built-in dataset",
        _set("name", "mimic-iv-ed"),
        "key name: 'mimic-iv-ed' is a built-in dataset; give your dataset a name of its own",
    ),
    (
        "name with spaces",
        _set("name", "My Data"),
        INVALID + "name: String should match pattern '^[a-z0-9][a-z0-9_-]{0,62}$' (found 'My Data')",
    ),
    (
        "bad regular expression",
        _set("tables.0.columns.visit_id", {"type": "string", "pattern": "V[0-9"}),
        INVALID + "tables.0.columns.visit_id.pattern: not a valid regular expression (unterminated character set at position 1)",
    ),
    (
        "unknown column type",
        _set("tables.0.columns.age.type", "float"),
        INVALID + "tables.0.columns.age.type: Input should be 'integer', 'number', 'string' or 'boolean' (found 'float')",
    ),
    (
        "test fraction out of range",
        _set("split.test_fraction", 1.5),
        INVALID + "split.test_fraction: Input should be less than 1 (found 1.5)",
    ),
    (
        "typo in a recipe preset",
        _set("pools", {"quick": {"architecture": {"name": "mlp"}, "recipe": {"epoch": 3}}}),
        INVALID + "pools.quick.recipe.epoch: unknown key (check the spelling; docs/dataset-spec.schema.json lists the keys)",
    ),
]
# fmt: on


@pytest.mark.parametrize(("case", "mutate", "message"), SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_spec_errors_name_the_key_and_what_was_expected(tmp_path: Path, case: str, mutate: Callable[[dict], None], message: str) -> None:
    spec = copy.deepcopy(BASE)
    mutate(spec)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError) as err:
        get_dataset(f"spec:{path}")
    assert str(err.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ntables: [\n", " line 3, column 1: not valid YAML (expected the node content, but found '<stream end>')"),
        ("- a\n- b\n", " a dataset spec is a mapping of keys (name, tables, patient_id, ...), found list"),
    ],
)
def test_spec_file_that_is_not_a_spec(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        get_dataset(f"spec:{path}")
    assert str(err.value) == f"{path}:{message}"


def test_missing_spec_file_and_unknown_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^/nonexistent/x\.yaml: dataset spec file not found$"):
        get_dataset("spec:/nonexistent/x.yaml")
    with pytest.raises(ConfigError) as err:
        get_dataset(f"spec:{EXAMPLES / 'clinic_visits.yaml'}", {"image_size": 3})
    assert str(err.value) == "dataset 'clinic-visits': unknown option(s) image_size; its options: split_seed, test_fraction"


DATA_CASES: list[tuple[str, Callable[[dict], None], str]] = [
    (
        "column in no table",
        _set("patient_id", "patient_number"),
        "visits.csv, patients.csv, column 'patient_number': column 'patient_number' named by key patient_id is in none of the tables",
    ),
    (
        "declared column missing",
        _set("tables.0.columns.weight", {"type": "number"}),
        "visits.csv, column 'weight': column 'weight' declared under tables.0.columns is missing",
    ),
    ("join key missing", _set("tables.1.join_on", "site"), "patients.csv, column 'site': join key 'site' (tables.1.join_on) is missing"),
    (
        "filter on a column no table has",
        _set("filters.x", {"expr": "ward == 'A'"}),
        "visits.csv, patients.csv, column 'ward': column 'ward' named by key filters.2 is in none of the tables",
    ),
]


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_clinic_visits(tmp_path_factory.mktemp("clinic") / "raw", n_patients=30)


@pytest.mark.parametrize(("case", "mutate", "message"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data_errors_name_file_and_column(tmp_path: Path, clinic: dict, case: str, mutate: Callable[[dict], None], message: str) -> None:
    spec = copy.deepcopy(BASE)
    mutate(spec)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(StructuralError) as err:
        get_dataset(f"spec:{path}").read_records(clinic["raw"], Quarantine())
    assert str(err.value) == message


def test_unreadable_tables_name_the_file(tmp_path: Path, clinic: dict) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "visits.csv").write_bytes("visit_id,mrn\nV1,\xff\xfe\n".encode("latin-1"))
    adapter = get_dataset(f"spec:{EXAMPLES / 'clinic_visits.yaml'}")
    with pytest.raises(StructuralError, match=r"visits.csv: not valid UTF-8 text near byte \d+ \(expected a UTF-8 encoded CSV\)$"):
        adapter.read_records(raw, Quarantine())
    (raw / "visits.csv").write_text("visit_id,mrn\nV1,M1\n")
    with pytest.raises(StructuralError, match=r"patients.csv: file not found$"):
        adapter.read_records(raw, Quarantine())
    (raw / "index.parquet").write_text("not parquet")
    spec = yaml.safe_load((EXAMPLES / "ecg_signals.yaml").read_text())
    spec["tables"][0]["path"] = "index.parquet"
    (tmp_path / "ecg.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(StructuralError, match=r"index.parquet: cannot be read as Parquet \(ArrowInvalid\) \(expected a Parquet file\)$"):
        get_dataset(f"spec:{tmp_path / 'ecg.yaml'}").read_records(raw, Quarantine())


def test_bad_rows_are_quarantined_with_their_reason_and_nothing_is_lost(tmp_path: Path) -> None:
    """The planted faults of the three example datasets: every one is in the quarantine with its
    exact reason, identifiers withheld, and raw rows = accepted + quarantined."""
    expected = {
        "clinic_visits": {
            ("patients.csv", "dedupe", "mrn: the same mrn in patients.csv as line 9; the first row is kept"),
            ("visits.csv", "contract", "age: expected a number, found 'forty'"),
            ("visits.csv", "dedupe", "visit_id: the same record id as line 3; the first row is kept"),
            ("visits.csv", "contract", "mrn: no valid row of patients.csv has this mrn (value withheld)"),
            ("visits.csv", "contract", "admitted_30d: expected one of ['yes', 'no'], found 'maybe'"),
            ("visits.csv", "cohort", "cohort filter 'age >= 18.0' not met"),
            ("visits.csv", "cohort", "cohort filter \"site != 'training-site'\" not met"),
        },
        "derm_images": {
            ("manifest.csv", "decode", "inputs.path '{image_file}': image listed but missing"),
            (
                "manifest.csv",
                "decode",
                "inputs.path '{image_file}': cannot decode image (UnidentifiedImageError: cannot identify image file '<file>')",
            ),
            ("manifest.csv", "contract", "inputs.path '{image_file}': expected a relative path inside root 'images' (value withheld)"),
            ("manifest.csv", "contract", "patient: expected a value matching 'P[0-9]{5}', found an identifier (value withheld)"),
            (
                "manifest.csv",
                "contract",
                "lesion: expected a class of label.classes or a key of label.map ['bcc', 'benign', 'eczema', "
                "'inflammatory', 'malignant', 'melanoma', 'nevus', 'seborrheic keratosis'], found 'wart'",
            ),
            (
                "manifest.csv",
                "cohort",
                "partition: patient also has training records; a test record must come from a patient outside the training split",
            ),
        },
        "ecg_signals": {
            ("ecg_index.parquet", "decode", "inputs.path 'signals/{ecg_id}.npy': signal file listed but missing"),
            (
                "ecg_index.parquet",
                "decode",
                "inputs.path 'signals/{ecg_id}.npy': signal of shape (128, 2), expected (2, 128) (inputs.shape: [channels, samples])",
            ),
            ("ecg_index.parquet", "decode", "inputs.path 'signals/{ecg_id}.npy': 256 missing (NaN) or infinite samples"),
            ("ecg_index.parquet", "contract", "af: expected one of ['1', '0'], found '2'"),
        },
    }
    writers = {"clinic_visits": write_clinic_visits, "derm_images": write_derm_images, "ecg_signals": write_ward_ecg}
    for name, write in writers.items():
        info = write(tmp_path / name, 30)
        snap = build_snapshot(
            get_dataset(f"spec:{EXAMPLES / (name + '.yaml')}"), info["raw"], tmp_path / "results", b"spec-errors-test-secret-0123456"
        )
        q = snap.quarantine()
        assert set(zip(q["source_file"], q["stage"], q["reason"], strict=True)) == expected[name], name
        assert snap.n_raw == snap.n_accepted + snap.n_quarantined
        text = q.to_csv()
        assert not [i for i in info["ids"] if i in text], name


def test_cli_reports_a_bad_spec_without_a_traceback(tmp_path: Path, clinic: dict, capsys: pytest.CaptureFixture[str]) -> None:
    spec = copy.deepcopy(BASE)
    spec["label"]["kind"] = "regression"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["ingest", "--spec", str(path), str(clinic["raw"]), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"medaudit: error: {path}: invalid dataset spec:\n  key label.kind: expected one of") and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["ingest", "--spec", str(path), "extra", str(clinic["raw"])])
    assert "with --spec give the data folder only" in capsys.readouterr().err
