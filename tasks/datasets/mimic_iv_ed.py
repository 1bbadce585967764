"""MIMIC-IV-ED (paper-method.md §1.7): the benchmark's master_dataset.csv -> one record per ED stay.

Follows the benchmark's general processing (Xie et al. 2022): adults only (age >= 18), triage
temperature converted from °F to °C, missing triage vitals imputed with the training-split mean.
Deliberate difference (DECISIONS.md: patient-level audit): the 80/20 train/test split is drawn over
*patients* (seeded), not over stays, so no test patient was ever a training member.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.contracts import read_csv_as_strings, validate_table
from tasks.datasets.base import DatasetAdapter, InputChunk, TaskSpec, register_dataset
from tasks.datasets.ed_features import ED_FEATURES, TRIAGE, ed_feature_contract
from tasks.quarantine import Quarantine

MASTER = "master_dataset.csv"


@register_dataset
class MimicIVED(DatasetAdapter):
    name = "mimic-iv-ed"
    description = "MIMIC-IV-ED benchmark: hospitalisation at ED triage from 64 tabular features"
    layout = (MASTER,)
    task = TaskSpec(
        kind="binary",
        label_names=("outcome_hospitalization",),
        input_shape=(64,),
        modality="tabular",
        score_transform="binary_logit",
        default_architecture="mlp",
    )
    # the inputs a model gets, documented (`medaudit datasets --features mimic-iv-ed`, audit-model's input contract)
    feature_contract = staticmethod(ed_feature_contract)

    def n_raw_rows(self, raw_dir: Path) -> int:
        with open(Path(raw_dir) / MASTER, "rb") as fh:
            return max(sum(1 for _ in fh) - 1, 0)

    def read_records(self, raw_dir: Path, quarantine: Quarantine) -> pd.DataFrame:
        raw = read_csv_as_strings(Path(raw_dir) / MASTER)
        df = validate_table(raw, self.contract, MASTER, quarantine)

        minors = df["age"] < 18
        quarantine.add_rows(df[minors], "cohort", "age", "cohort filter: age < 18 (benchmark includes adults only)")
        df = df[~minors].reset_index(drop=True)

        df["triage_temperature"] = (df["triage_temperature"] - 32.0) * 5.0 / 9.0
        df["gender_binarized"] = (df["gender"] == "F").astype("float64")

        test_fraction = float(self.options.get("test_fraction", 0.2))
        rng = np.random.default_rng(int(self.options.get("split_seed", 10)))
        patients = df["subject_id"].drop_duplicates().to_numpy()
        test_patients = rng.choice(patients, size=round(test_fraction * len(patients)), replace=False)
        split = np.where(df["subject_id"].isin(test_patients), "test", "train")

        train = split == "train"
        for col in TRIAGE:
            df[col] = df[col].astype("float64").fillna(float(df.loc[train, col].mean()))

        records = pd.DataFrame(
            {
                "raw_patient_id": df["subject_id"].astype("int64").astype(str),
                "split": split,
                "y_outcome_hospitalization": df["outcome_hospitalization"].astype("float64"),
            }
        )
        for attr in self.contract.subgroups:
            records[attr] = self.contract.map_subgroup(attr, df[self.contract.subgroups[attr].column])
        features = df[list(ED_FEATURES)].astype("float64")
        return pd.concat([records, features, df[["_source_file", "_source_row"]]], axis=1)

    def decode_inputs(self, records: pd.DataFrame, raw_dir: Path) -> InputChunk:
        x = records[list(ED_FEATURES)].to_numpy(dtype=np.float32)
        return InputChunk(ok_positions=records.index.to_numpy(), x=x, failures={})
