#!/usr/bin/env bash
# Run PtychoPINN's own tests of the modules this package provides, unchanged,
# against the installed `ptycho` (the drop-in check of issue 20).
#
#   bash tools/ptychopinn-tests.sh PTYCHOPINN [FILE ...]
#
# PTYCHOPINN is a PtychoPINN checkout (a work tree, or a bare/mirror git
# directory: its HEAD is read).  FILE defaults to the test files of the modules
# we provide (below).  Each file is copied into a temporary directory that holds
# no `ptycho` package, so the installed one is imported, and run on its own;
# one line per file, then pytest's own summary.  Exit status 1 when a file
# fails or skips a test for any reason but TensorFlow Addons.  Nothing is written into this
# repository.
#
# PtychoPINN's tests/conftest.py is not used (--noconftest): its
# pytest_ignore_collect hook takes the `path` argument that pytest 9 removed,
# so pytest refuses to load it.  It only registers markers and skips PyTorch
# tests, which these files do not have.
set -euo pipefail

if [ $# -lt 1 ]; then
    sed -n '2,18p' "$0" >&2
    exit 2
fi
src=$1
shift
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
    files=(
        tests/test_tf_helper.py
        tests/test_tf_helper_edge_aware.py
        tests/tf_helper/test_translation_shape_guard.py
        tests/test_projective_warp_xla.py
        tests/test_raw_data_grouping.py
        tests/test_coordinate_grouping.py
        tests/test_oversampling.py
        tests/test_normalize_data_uint16.py
        tests/test_params_seal.py
    )
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if git -C "$src" rev-parse --is-bare-repository >/dev/null 2>&1 && [ ! -d "$src/tests" ]; then
    commit=$(git -C "$src" rev-parse --short HEAD)
    for f in "${files[@]}"; do
        mkdir -p "$work/$(dirname "$f")"
        git -C "$src" show "HEAD:$f" >"$work/$f"
    done
else
    commit=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo "work tree")
    for f in "${files[@]}"; do
        mkdir -p "$work/$(dirname "$f")"
        cp "$src/$f" "$work/$f"
    done
fi

echo "PtychoPINN $commit; ptycho from $(python -c 'import ptycho, os; print(os.path.dirname(ptycho.__file__))')"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
status=0
cd "$work"
for f in "${files[@]}"; do
    set +e
    out=$(python -m pytest -q -p no:cacheprovider --noconftest -rs "$f" 2>&1)
    rc=$?
    set -e
    summary=$(printf '%s\n' "$out" | tail -n 1)
    printf '%-52s %s\n' "$f" "$summary"
    skips=$(printf '%s\n' "$out" | grep '^SKIPPED' | grep -v -i 'addons' || true)
    if [ -n "$skips" ]; then
        # the drop-in promise: skips only where TensorFlow Addons is missing
        printf '%s\n' "$skips" | sed 's/^/    /'
        status=1
    fi
    if [ "$rc" -ne 0 ]; then
        status=1
        printf '%s\n' "$out" | grep -E '^(FAILED|ERROR)' | sed 's/^/    /' || true
    fi
done
exit $status
