"""What every registered dataset adapter must do, run over `list_datasets()` (a new adapter is checked by
registering it): its synthetic writer is a function of the seed, and a folder without its files is a
structural error naming the file looked for. Each dataset's own definitions (cohort filters, labels, split,
subgroups, decoding) are in its test_<dataset>.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.datasets import get_dataset, list_datasets
from tasks.datasets.quarantine import Quarantine
from tasks.errors import StructuralError
from tasks.synthetic import get_synthetic_writer

DATASETS = [cls.name for cls in list_datasets()]


def _files(root: Path) -> dict[str, bytes]:
    """Every file a writer wrote under ``root``, by path relative to it."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("dataset", DATASETS)
def test_synthetic_writer_is_a_function_of_the_seed(dataset: str, tmp_path: Path) -> None:
    write = get_synthetic_writer(dataset)
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write(tmp_path / name, 60, seed=seed)  # 50 patients at least for every writer
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a and a.keys() == b.keys()
    assert [rel for rel in a if a[rel] != b[rel]] == [], "same seed, different files"
    assert any(a.get(rel) != data for rel, data in c.items()), "another seed wrote the same cohort"


@pytest.mark.parametrize("dataset", DATASETS)
def test_a_folder_without_its_files_is_a_structural_error(dataset: str, tmp_path: Path) -> None:
    with pytest.raises(StructuralError) as err:
        get_dataset(dataset).read_records(tmp_path, Quarantine())
    assert err.value.file and err.value.file in str(err.value)
