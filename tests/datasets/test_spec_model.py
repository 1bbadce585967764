"""The dataset spec itself: the published JSON schema is current, the example specs validate, the
filter language evaluates what it says and nothing else, and compiled adapters survive pickling (Dask)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.datasets import get_dataset
from tasks.datasets.quarantine import Quarantine
from tasks.datasets.spec import SpecAdapter, load_spec, spec_json_schema
from tasks.datasets.spec_table import Filter
from tasks.errors import ConfigError
from tasks.synthetic.own_data import EXAMPLES, write_ward_ecg

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "dataset-spec.schema.json"
REGENERATE = (
    '.venv/bin/python -c "import json; from tasks.datasets.spec import spec_json_schema; '
    "open('docs/dataset-spec.schema.json', 'w').write(json.dumps(spec_json_schema(), indent=2, sort_keys=True) + '\\n')\""
)


def test_published_json_schema_is_current() -> None:
    assert json.loads(SCHEMA.read_text()) == spec_json_schema(), f"docs/dataset-spec.schema.json is stale; regenerate: {REGENERATE}"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_specs_validate_against_model_and_schema(name: str) -> None:
    import jsonschema
    import yaml

    jsonschema.validate(yaml.safe_load((EXAMPLES / name).read_text()), spec_json_schema())
    spec = load_spec(EXAMPLES / name)
    adapter = get_dataset(f"spec:{EXAMPLES / name}")
    assert isinstance(adapter, SpecAdapter) and adapter.name == spec.name
    assert adapter.subgroup_attributes == list(spec.subgroups)
    assert set(adapter.default_pools) == {"paper", "quick"}
    kind = spec.inputs.kind
    assert adapter.task.default_architecture == {"tabular": "mlp", "image": "wrn_28_2", "signal": "resnet1d_128"}[kind]
    assert adapter.default_pools["paper"]["architecture"]["name"] == adapter.task.default_architecture


FRAME = pd.DataFrame({"age": ["17", "18", "70.5", None, "x"], "site": ["A", "B", "A", "C", None], "code": [1.0, 2.0, 3.0, np.nan, 1.0]})


@pytest.mark.parametrize(
    ("expr", "kept"),
    [
        ("age >= 18", [False, True, True, False, False]),  # a gap or a non-number fails a numeric test
        ("not age >= 18", [True, False, False, True, True]),
        ("site in ['A', 'C']", [True, False, True, True, False]),
        ("site not in ['A'] and age < 50", [False, True, False, False, False]),
        ("is_missing(age) or site == 'A'", [True, False, True, True, False]),
        ("code in [1, 3]", [True, False, True, False, True]),
        ("site != 'B'", [True, False, True, True, False]),
    ],
)
def test_filter_language(expr: str, kept: list[bool]) -> None:
    assert Filter(expr, "filters.0").mask(FRAME).tolist() == kept


@pytest.mark.parametrize(
    "expr",
    ["open('/etc/passwd')", "age.real > 1", "[x for x in age]", "age > (1).__class__", "lambda: 1", "age if site else code", "age + 1 > 2"],
)
def test_filter_language_rejects_everything_else(expr: str) -> None:
    with pytest.raises(ConfigError, match=r"^filters\.0: filter"):
        Filter(expr, "filters.0")


def test_compiled_adapter_pickles_and_gives_the_same_records(tmp_path: Path) -> None:
    info = write_ward_ecg(tmp_path / "raw", 8)
    adapter = get_dataset(f"spec:{EXAMPLES / 'ecg_signals.yaml'}", {"split_seed": 4})
    clone = pickle.loads(pickle.dumps(adapter))
    assert type(clone).__name__ == type(adapter).__name__ and clone.options == {"split_seed": 4}
    a, b = adapter.read_records(info["raw"], Quarantine()), clone.read_records(info["raw"], Quarantine())
    pd.testing.assert_frame_equal(a, b)
    chunk = clone.decode_inputs(b.iloc[:3], info["raw"])
    assert chunk.x.shape == (3, 2, 128) and chunk.x.dtype == np.float32


@pytest.mark.parametrize("command", ["ingest", "audit", "audit-model", "dp-sweep", "scaling"])
def test_spec_option_on_every_dataset_command(command: str, tmp_path: Path) -> None:
    from flows.cli import _apply_spec, build_parser

    parser = build_parser()
    extra = {"audit-model": ["--logits", "l.parquet", "--members", "m.csv"], "scaling": ["--archs", "mlp"]}.get(command, [])
    spec = EXAMPLES / "clinic_visits.yaml"
    args = parser.parse_args([command, "--spec", str(spec), str(tmp_path), *extra])
    _apply_spec(args, parser)
    assert (args.dataset, args.raw_dir) == (f"spec:{spec.resolve()}", tmp_path)
    args = parser.parse_args([command, f"spec:{spec}", str(tmp_path), *extra])  # the same without --spec
    _apply_spec(args, parser)
    assert (args.dataset, args.raw_dir) == (f"spec:{spec.resolve()}", tmp_path)
    with pytest.raises(SystemExit):
        _apply_spec(parser.parse_args([command, "--spec", str(spec), *extra]), parser)  # no RAW_DIR
