#!/usr/bin/env bash
# One lease of a lent GPU machine (docs/PERFORMANCE.md, "GPU"): the CUDA cases of the device tests, then
# bench/bench_gpu.py. Run from the repository root there, carrying .whl (bench/stage_wheels.sh); writes to $OUT.
set -u
out=${OUT:-bench/results}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 MEDAUDIT_HOME=/tmp/medaudit-home
export MEDAUDIT_SECRET_FILE=/tmp/medaudit-home/secret/patient_key.secret TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$out/nvidia-smi.txt" 2>&1
# the tests' CUDA cases (CI has no GPU; conftest needs Prefect, which this machine lacks: --noconftest)
timeout 120 python3 -m pytest -q --noconftest -p no:cacheprovider -rs -k cuda tests/training/test_device_paths.py 2>&1 |
  tee "$out/pytest_cuda.txt" | tail -4
timeout "${BENCH_TIMEOUT:-420}" python3 bench/bench_gpu.py --out "$out" --budget-s "${BENCH_BUDGET:-330}" --procs 1,4 "$@" \
  2>"$out/bench_gpu.log" >/dev/null
rc=$?
cat "$out/bench_gpu.log"
exit $rc
