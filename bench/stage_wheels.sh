#!/usr/bin/env bash
# Stage, here, the pure-Python packages bench/gpu_session.sh needs on a GPU machine that has torch but no
# network: pydantic (recipes), opacus (DP-SGD), wfdb (PTB-XL adapter imports). Wheels go to .whl/ (git-ignored
# through .git/info/exclude), at the versions of this checkout's .venv, built for CPython 3.12 on x86-64 Linux.
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
pin() { .venv/bin/python -c "import importlib.metadata as m, sys; print(sys.argv[1] + '==' + m.version(sys.argv[1]))" "$1"; }
wanted=(pydantic pydantic_core annotated-types typing-inspection typing_extensions opacus wfdb soundfile cffi pycparser)
pins=()
for name in "${wanted[@]}"; do pins+=("$(pin "$name")"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
ls .whl
