"""A synthetic ECG cohort in the PTB-XL 1.0.3 release layout (ptbxl_database.csv, scp_statements.csv,
records100/NNNNN/<ecg_id>_lr.{hea,dat} WFDB format-16 records).

Deterministic from a seed. Patients have one to several ECGs, all in one stratification fold (as the
release: folds are patient-disjoint). Each ECG is a 10 s, 100 Hz, 12-lead waveform in mV built from a
P-QRS-T beat whose shape depends on its diagnostic superclasses, so a model can learn them:
MI -> deep Q waves and ST elevation, STTC -> inverted T and ST depression, CD -> wide, notched QRS,
HYP -> tall R in V5/V6 and deep S in V1/V2, NORM -> a plain beat. Only the 100 Hz records are
written (the adapter reads no 500 Hz data); filename_hr is filled in as in the release.

With ``awkward=True`` (default) the cohort also contains, once each unless noted:

* ``no_superclass`` (3 ECGs): only non-diagnostic statements (e.g. LVOLT, SR) -> all-zero labels;
* ``age_300``: a patient older than 89, published as age 300; ``missing_age``: an empty age cell;
* ``bad_scp_codes``: an scp_codes cell that is not a dict literal (contract quarantine);
* ``unreadable_header``, ``missing_record``, ``wrong_rate`` (a 500 Hz header), ``short_record``
  (5 s of signal): ECGs whose record cannot become model input (decode failures);
* extra beats noted on about 10% of ECGs (always);
* ``atypical_presentation`` (always, a share ``atypical`` of the other ECGs, default 3%): the waveform
  shows another superclass than the ECG's statements (accepted; a model gets them right only by
  memorising them).

Ground truth for tests is in ``_synthetic_truth.csv`` (source_file, source_row, plant, stage; stage is
empty for a row the adapter should accept), which the adapter ignores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.synthetic import register_synthetic
from tasks.synthetic.cohort import ATYPICAL, ATYPICAL_SHARE, TRUTH_FILE, another, mark_atypical, start_cohort

LEADS = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
FS = 100
N_SAMPLES = 1000

# (code, diagnostic_class, diagnostic_subclass, description) for diagnostic statements of the release.
_DIAGNOSTIC = (
    ("NORM", "NORM", "NORM", "normal ECG"),
    ("IMI", "MI", "IMI", "inferior myocardial infarction"),
    ("ASMI", "MI", "AMI", "anteroseptal myocardial infarction"),
    ("ILMI", "MI", "IMI", "inferolateral myocardial infarction"),
    ("AMI", "MI", "AMI", "anterior myocardial infarction"),
    ("LMI", "MI", "LMI", "lateral myocardial infarction"),
    ("NDT", "STTC", "STTC", "non-diagnostic T abnormalities"),
    ("NST_", "STTC", "NST_", "non-specific ST changes"),
    ("ISC_", "STTC", "ISC_", "non-specific ischemic"),
    ("ISCAL", "STTC", "ISCA", "ischemic in anterolateral leads"),
    ("LNGQT", "STTC", "STTC", "long QT-interval"),
    ("LAFB", "CD", "LAFB/LPFB", "left anterior fascicular block"),
    ("IRBBB", "CD", "IRBBB", "incomplete right bundle branch block"),
    ("1AVB", "CD", "_AVB", "first degree AV block"),
    ("IVCD", "CD", "IVCD", "non-specific intraventricular conduction disturbance (block)"),
    ("CRBBB", "CD", "CRBBB", "complete right bundle branch block"),
    ("CLBBB", "CD", "CLBBB", "complete left bundle branch block"),
    ("LVH", "HYP", "LVH", "left ventricular hypertrophy"),
    ("LAO/LAE", "HYP", "LAO/LAE", "left atrial overload/enlargement"),
    ("RVH", "HYP", "RVH", "right ventricular hypertrophy"),
)
# (code, form, rhythm, description) for statements that are not diagnostic.
_OTHER = (
    ("SR", 0, 1, "sinus rhythm"),
    ("AFIB", 0, 1, "atrial fibrillation"),
    ("STACH", 0, 1, "sinus tachycardia"),
    ("SBRAD", 0, 1, "sinus bradycardia"),
    ("SARRH", 0, 1, "sinus arrhythmia"),
    ("PVC", 1, 0, "ventricular premature complex"),
    ("LVOLT", 1, 0, "low QRS voltages in the frontal and horizontal leads"),
    ("HVOLT", 1, 0, "high QRS voltage"),
    ("LOWT", 1, 0, "low amplitude T-waves"),
    ("ABQRS", 1, 0, "abnormal QRS"),
)
# Diagnostic statements that are also form statements in the release.
_ALSO_FORM = {"NDT", "NST_", "LNGQT"}
_CLASS_WEIGHTS = {"MI": 0.3, "STTC": 0.3, "CD": 0.27, "HYP": 0.13}
_LIKELIHOODS = (15.0, 35.0, 50.0, 80.0, 100.0)
_EXTRA_BEATS = ("1ES", "SVES", "2ES", "1SVES", "4ES", "VES")
_DEVICES = ("CS-12   E", "AT-6 C 5.5", "CS100    3", "AT-60    3")
# Lead gains of the R wave (projection of the heart axis on each lead).
_R_GAIN = np.array([0.7, 1.0, 0.4, -0.8, 0.3, 0.7, -0.3, 0.1, 0.6, 1.1, 1.2, 1.0])


def _statements_table() -> pd.DataFrame:
    """scp_statements.csv content: index = statement code (written as the unnamed first column)."""
    rows = []
    for code, cls, sub, desc in _DIAGNOSTIC:
        rows.append(
            {
                "code": code,
                "description": desc,
                "diagnostic": 1.0,
                "form": 1.0 if code in _ALSO_FORM else np.nan,
                "rhythm": np.nan,
                "diagnostic_class": cls,
                "diagnostic_subclass": sub,
                "Statement Category": "diagnostic",
                "SCP-ECG Statement Description": desc,
            }
        )
    for code, form, rhythm, desc in _OTHER:
        rows.append(
            {
                "code": code,
                "description": desc,
                "diagnostic": np.nan,
                "form": 1.0 if form else np.nan,
                "rhythm": 1.0 if rhythm else np.nan,
                "diagnostic_class": np.nan,
                "diagnostic_subclass": np.nan,
                "Statement Category": "Rhythm" if rhythm else "form",
                "SCP-ECG Statement Description": desc,
            }
        )
    df = pd.DataFrame(rows).set_index("code")
    df.index.name = None
    for col in ("AHA code", "aECG REFID", "CDISC Code", "DICOM Code"):
        df[col] = np.nan
    return df


def _gauss(t: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


def ecg_waveform(classes: set[str], rng: np.random.Generator) -> np.ndarray:
    """A 10 s, 100 Hz, 12-lead ECG in mV, (1000, 12) float64, whose beat shape depends on ``classes``."""
    t = np.arange(N_SAMPLES) / FS
    rate = rng.uniform(55, 95) / 60.0
    peaks = np.arange(rng.uniform(0.2, 0.8), 10.0, 1.0 / rate)
    qrs_w = 0.025 * (2.5 if "CD" in classes else 1.0)
    r_amp = 1.0 * rng.uniform(0.8, 1.2)
    q_amp, st, t_amp = -0.08, 0.0, 0.3
    if "MI" in classes:
        q_amp, st = -0.45, 0.18
    if "STTC" in classes:
        st, t_amp = st - 0.12, -0.3
    gain = _R_GAIN.copy()
    if "HYP" in classes:
        gain[[9, 10, 11]] *= 2.2
        gain[[6, 7]] *= 2.5
    sig = np.zeros((N_SAMPLES, len(LEADS)))
    for r in peaks:
        d = t - r
        p_wave = 0.12 * _gauss(d, -0.17, 0.025)
        qrs = r_amp * _gauss(d, 0.0, qrs_w) + q_amp * _gauss(d, -0.04, 0.012) - 0.25 * _gauss(d, 0.045, 0.015)
        if "CD" in classes:
            qrs = qrs + 0.5 * r_amp * _gauss(d, 0.08, 0.02)  # notched (RSR') complex
        st_seg = st * ((d > 0.06) & (d < 0.2))
        t_wave = t_amp * _gauss(d, 0.3, 0.05)
        slow_gain = np.sign(gain) * np.minimum(np.abs(gain), 1.0)  # P, ST and T do not grow with HYP
        sig += np.outer(p_wave + t_wave + st_seg, slow_gain) + np.outer(qrs, gain)
    wander = 0.05 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 2 * np.pi))
    return sig + wander[:, None] + rng.normal(0, 0.02, size=sig.shape)


def write_wfdb_record(target: Path, signal: np.ndarray, fs: int, gain: float = 1000.0) -> None:
    """Write ``signal`` (n_samples, 12) in mV as a WFDB format-16 record ``target``.hea/.dat.

    The files are what ``wfdb.wrsamp(..., fmt=['16']*12, adc_gain=[1000.0]*12, baseline=[0]*12)`` writes
    (PTB-XL's own encoding); they are produced directly because wrsamp spends ~50 ms per record on
    header bookkeeping, which would dominate a test fixture. Read back with ``wfdb.rdsamp``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # -32768 means "missing" in format 16, so the range stops one short.
    digital = np.clip(np.round(signal * gain), -32767, 32767).astype("<i2")
    digital.tofile(target.with_name(target.name + ".dat"))
    checksums = digital.astype(np.int64).sum(axis=0) % 65536
    lines = [f"{target.name} {signal.shape[1]} {fs} {signal.shape[0]}"]
    for lead, first, checksum in zip(LEADS, digital[0], checksums, strict=True):
        lines.append(f"{target.name}.dat 16 {gain}(0)/mV 16 0 {int(first)} {int(checksum)} 0 {lead}")
    target.with_name(target.name + ".hea").write_text("\n".join(lines) + "\n")


def _scp_codes(rng: np.random.Generator, classes: set[str]) -> dict[str, float]:
    codes: dict[str, float] = {}
    for cls in sorted(classes):
        options = [c for c, k, _, _ in _DIAGNOSTIC if k == cls]
        codes[str(rng.choice(options))] = 100.0 if cls == "NORM" else float(rng.choice(_LIKELIHOODS))
    if rng.random() < 0.2:
        codes[str(rng.choice(["PVC", "LOWT", "ABQRS", "HVOLT"]))] = 0.0
    codes[str(rng.choice(["SR", "SR", "SR", "AFIB", "STACH", "SBRAD", "SARRH"]))] = 0.0
    return codes


@register_synthetic("ptb-xl")
def write_ptb_xl(raw_dir: Path, n_patients: int = 200, seed: int = 0, awkward: bool = True, atypical: float = ATYPICAL_SHARE) -> Path:
    """Write a PTB-XL-layout cohort of ``n_patients`` patients into ``raw_dir``; returns ``raw_dir``."""
    raw_dir, rng = start_cohort(raw_dir, n_patients, seed, 20)

    patient_ids = rng.choice(np.arange(100, 22_000), size=n_patients, replace=False).astype(float)
    folds = rng.permutation(np.arange(n_patients) % 10 + 1)  # every fold, incl. the test fold 10, is used
    sexes = rng.integers(0, 2, size=n_patients)
    ages = np.clip(rng.normal(60, 17, size=n_patients), 18, 89).round()
    n_ecgs = 1 + np.minimum(rng.poisson(0.7, size=n_patients), 4)
    pid = np.repeat(np.arange(n_patients), n_ecgs)
    n = len(pid)

    classes: list[set[str]] = []
    for _ in range(n):
        if rng.random() < 0.45:
            classes.append({"NORM"})
        else:
            k = 1 + int(rng.random() < 0.3)
            names = list(_CLASS_WEIGHTS)
            p = np.array(list(_CLASS_WEIGHTS.values()))
            classes.append(set(rng.choice(names, size=k, replace=False, p=p / p.sum()).tolist()))
    scp = [_scp_codes(rng, c) for c in classes]

    dates = pd.Timestamp("1984-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 13 * 365 * 86400, size=n)), unit="s")
    order = rng.permutation(n)  # ECG ids follow recording date; patients interleave
    pid, classes, scp = pid[order], [classes[i] for i in order], [scp[i] for i in order]
    ecg_id = np.arange(1, n + 1)
    years = (dates - dates.to_series().groupby(pid).transform("min").to_numpy()).days // 365
    age = np.minimum(ages[pid] + np.asarray(years), 89)  # a patient's later ECGs are older
    extra = np.where(rng.random(n) < 0.1, rng.choice(_EXTRA_BEATS, size=n), "")

    plant = np.full(n, "", dtype=object)
    stage = np.full(n, "", dtype=object)
    if awkward:
        picks = iter(rng.permutation(n))
        for name, st in (
            ("no_superclass", ""),
            ("no_superclass", ""),
            ("no_superclass", ""),
            ("missing_age", ""),
            ("bad_scp_codes", "contract"),
            ("unreadable_header", "decode"),
            ("missing_record", "decode"),
            ("wrong_rate", "decode"),
            ("short_record", "decode"),
        ):
            i = next(picks)
            plant[i], stage[i] = name, st
        for i in np.flatnonzero(plant == "no_superclass"):
            classes[i] = set()
            scp[i] = {"LVOLT": 100.0, "SR": 0.0} if i % 2 else {"SR": 0.0}
        old = next(i for i in picks if plant[i] == "")
        plant[old] = "age_300"
        age[old] = 300.0  # PTB-XL publishes ages above 89 as 300
        age[plant == "missing_age"] = np.nan

    folder = [f"{(e // 1000) * 1000:05d}" for e in ecg_id]
    filename_lr = [f"records100/{f}/{e:05d}_lr" for f, e in zip(folder, ecg_id, strict=True)]
    scp_text = [str(c) for c in scp]
    for i in np.flatnonzero(plant == "bad_scp_codes"):
        scp_text[i] = scp_text[i][:-1]  # a cut-off cell: "{'NORM': 100.0, 'SR': 0.0"
    db = pd.DataFrame(
        {
            "ecg_id": ecg_id,
            "patient_id": patient_ids[pid],
            "age": age,
            "sex": sexes[pid],
            "height": np.where(rng.random(n) < 0.3, rng.normal(168, 9, n).round(), np.nan),
            "weight": np.where(rng.random(n) < 0.4, rng.normal(75, 14, n).round(), np.nan),
            "nurse": np.where(rng.random(n) < 0.7, rng.integers(0, 12, n), np.nan),
            "site": rng.integers(0, 50, n).astype(float),
            "device": rng.choice(_DEVICES, size=n),
            "recording_date": dates.strftime("%Y-%m-%d %H:%M:%S"),
            "report": ["sinusrhythmus normales ekg" if c == {"NORM"} else "sinusrhythmus" for c in classes],
            "scp_codes": scp_text,
            "heart_axis": np.where(rng.random(n) < 0.6, rng.choice(["MID", "LAD", "ALAD", "RAD"], size=n), ""),
            "infarction_stadium1": np.where(["MI" in c for c in classes], "Stadium II", ""),
            "infarction_stadium2": "",
            "validated_by": np.where(rng.random(n) < 0.6, rng.integers(0, 12, n), np.nan),
            "second_opinion": rng.random(n) < 0.02,
            "initial_autogenerated_report": rng.random(n) < 0.2,
            "validated_by_human": rng.random(n) < 0.7,
            "baseline_drift": np.where(rng.random(n) < 0.07, ", V1-V3", ""),
            "static_noise": np.where(rng.random(n) < 0.15, ", I-V1,", ""),
            "burst_noise": np.where(rng.random(n) < 0.03, "alles", ""),
            "electrodes_problems": "",
            "extra_beats": extra,
            "pacemaker": np.where(rng.random(n) < 0.01, "ja, pacemaker", ""),
            "strat_fold": folds[pid],
            "filename_lr": filename_lr,
            "filename_hr": [f.replace("records100", "records500").replace("_lr", "_hr") for f in filename_lr],
        }
    )
    db.to_csv(raw_dir / "ptbxl_database.csv", index=False)
    _statements_table().to_csv(raw_dir / "scp_statements.csv")

    _, arng = mark_atypical(plant, seed, atypical)
    for i in range(n):
        if plant[i] == "missing_record":
            continue
        signal = ecg_waveform(classes[i], rng)
        if plant[i] == ATYPICAL:  # drawn as above first, so the writer's generator stays in step
            signal = ecg_waveform({another(arng, ("NORM", *_CLASS_WEIGHTS), "+".join(sorted(classes[i])))}, arng)
        if plant[i] == "short_record":
            signal = signal[: N_SAMPLES // 2]
        write_wfdb_record(raw_dir / filename_lr[i], signal, 500 if plant[i] == "wrong_rate" else FS)
        if plant[i] == "unreadable_header":
            (raw_dir / f"{filename_lr[i]}.hea").write_text("this is not a WFDB header\n\x00\x01garbage\n")

    truth = pd.DataFrame({"source_file": "ptbxl_database.csv", "source_row": np.arange(n) + 2, "plant": plant, "stage": stage})
    truth[truth["plant"] != ""].to_csv(raw_dir / TRUTH_FILE, index=False)
    return raw_dir
