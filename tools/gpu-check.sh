#!/usr/bin/env bash
# The checks that need a GPU, in one run: the GPU cells of the test matrix,
# the JAX matrix on the GPU (JAX's default device where one is visible), and
# the GPU benchmark.  Logs and the benchmark JSON go to $OUT (default
# gpu-results/).  Run from the repository root on a machine with a GPU:
#
#     bash tools/gpu-check.sh
#     STEPS="gpu_cells suite" bash tools/gpu-check.sh     # the tests only
#
# Where Python packages cannot be installed (an offline GPU machine), put the
# missing pure-Python wheels (array-api-compat) in .whl/: they are installed
# into /tmp/site first.  TensorFlow is not needed: without it the legacy loop
# is skipped and the benchmark's reference is the NumPy backend.
set -uo pipefail
OUT=${OUT:-gpu-results}
PY=${PYTHON:-python3}
WORKERS=${WORKERS:-8}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# several pytest workers share one GPU: JAX must not take 75% of it in each
export XLA_PYTHON_CLIENT_PREALLOCATE=false
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
status=0
STEPS=${STEPS:-gpu_cells suite bench reassembly}
step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, remember a failure (only the STEPS named)
    local name=$1; shift
    case " $STEPS " in *" $name "*) ;; *) echo "== $name: not in STEPS"; return ;; esac
    echo "== $name: $*"
    "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n "${TAIL:-6}" "$OUT/$name.log"
    echo "== $name: exit $rc"
    [ "$rc" -eq 0 ] || status=1
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" - <<'PY'
import importlib
for name in ("numpy", "scipy", "jax", "cupy", "torch", "array_api_compat", "numba"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as exc:
        print(f"{name}: {type(exc).__name__}: {exc}")
import jax
print("jax devices:", jax.devices())
PY
# 1. The GPU cells, demanded: a library that sees no GPU fails here.
step gpu_cells env PTYCHO_TEST_DEVICE=gpu PTYCHO_TEST_BACKENDS=numpy,jax \
    "$PY" -m pytest -q -p no:cacheprovider -n "$WORKERS" -m gpu tests
# 2. The whole suite with JAX on the GPU (its default device there): the
#    equivalence matrix, the PtychoPINN fixture, rounding, reassembly, devices,
#    all exact (tests that need TensorFlow or an absent extra skip).
step suite env PTYCHO_TEST_BACKENDS=numpy,jax "$PY" -m pytest -q -p no:cacheprovider -n "$WORKERS" tests
# 3. The benchmark on the reference workload: the host rows that need no
#    TensorFlow, then the GPU rows.
TAIL=${BENCH_TAIL:-30} step bench "$PY" -m ptycho.bench --gpu --modes floor,numba,jax,jax_plain --no-plot \
    --repeats "${REPEATS:-5}" --json "$OUT/bench.json"
# 4. Placement on the GPU (JAX's default device) next to the host's NumPy rows.
TAIL=${BENCH_TAIL:-30} step reassembly "$PY" -m ptycho.bench --modes floor --reassembly --no-plot \
    --repeats "${REPEATS:-5}" --json "$OUT/reassembly.json"
exit $status
