"""The compiled order as XLA's own contraction, used only once verified (``ptycho.backends.native``).

Every program compiled with PtychoPINN's sum (``window.native_sum``) is run
once, through the same executable, on a crafted probe, and compared bit for
bit with the exact emulation before its results are used.  Here: the verified
program is the one used and gives the emulation's bits (random data, the
PtychoPINN fixture, complex128, per-translation sources and output origins);
programs made to contract differently -- every alternative order, forced
inside XLA, and PtychoPINN's bare expression -- are caught and fall back to
the emulation with a warning, still exact; traced calls and unverifiable
probes run the emulation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from ptycho.backends import Backend

XLA = [Backend.JAX.pytest_param(), Backend.TENSORFLOW.pytest_param()]


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """Every test starts with no compiled program and no verdict, the native order on."""
    from ptycho.backends import clear_compile_cache

    monkeypatch.delenv("PTYCHO_NATIVE_ORDER", raising=False)
    clear_compile_cache()
    yield
    clear_compile_cache()


def _require(b: Backend) -> None:
    from ptycho.testing import require_backend

    require_backend(b)


def _data(h=40, w=44, p=24, n=12, dtype=np.complex64, seed=0):
    rng = np.random.default_rng(seed)
    image = (rng.standard_normal((h, w)) + 1j * rng.standard_normal((h, w))).astype(dtype)
    real = np.float64 if dtype == np.complex128 else np.float32
    positions = np.stack([rng.uniform(-3, w + 3, p), rng.uniform(-3, h + 3, p)], axis=1).astype(real)
    return image, positions, n


def _bits(x) -> np.ndarray:
    from ptycho.testing import to_numpy

    return np.ascontiguousarray(to_numpy(x)).view(np.uint64)


def _same_bits(a, b) -> bool:
    a, b = _bits(a), _bits(b)
    return a.shape == b.shape and bool(np.array_equal(a, b))


def _reference(image, positions, n, channels=1):
    from ptycho.backends import extract_patches_grouped

    return extract_patches_grouped(image, positions, n, channels=channels, backend="numpy")


def _verdicts(kind=None):
    from ptycho.backends import native

    return [v for v in native.verdicts() if kind is None or v.job == kind]


# -- the verified native program is the one used, and exact ----------------------------------


@pytest.mark.parametrize("backend", XLA)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["c64", "c128"])
@pytest.mark.parametrize("channels", [1, 4])
def test_native_program_is_verified_and_exact(backend, dtype, channels):
    _require(backend)
    from ptycho.backends import extract_patches_grouped

    image, positions, n = _data(dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = extract_patches_grouped(image, positions, n, channels=channels, backend=backend.value)
    (verdict,) = _verdicts()
    assert verdict.backend == backend.value and verdict.job == "extract_job"
    assert verdict.native and verdict.reason == "verified" and verdict.mismatches == 0
    assert verdict.probe_elements == positions.shape[0] * n * n
    assert _same_bits(got, _reference(image, positions, n, channels))
    # a second call with the same signature is not checked again
    extract_patches_grouped(image, positions, n, channels=channels, backend=backend.value)
    assert len(_verdicts()) == 1


@pytest.mark.parametrize("backend", XLA)
def test_native_equals_emulation(backend, monkeypatch):
    """The same call with the native order switched off (PTYCHO_NATIVE_ORDER=0): the same bits."""
    _require(backend)
    from ptycho.backends import extract_patches_grouped

    image, positions, n = _data(h=64, w=64, p=64, n=16, seed=3)
    native_out = extract_patches_grouped(image, positions, n, channels=4, backend=backend.value)
    assert _verdicts()[0].native
    monkeypatch.setenv("PTYCHO_NATIVE_ORDER", "0")
    emulated = extract_patches_grouped(image, positions, n, channels=4, backend=backend.value)
    assert _same_bits(native_out, emulated)


def test_probe_runs_the_production_executable_jax():
    """JAX compiles the native program once: the probe and the production call share the executable."""
    _require(Backend.JAX)
    from ptycho.backends import _dispatch, extract_job, extract_patches_grouped

    image, positions, n = _data()
    extract_patches_grouped(image, positions, n, backend="jax")
    static = dict(patch_size=n, interpolation="bilinear", channels=1, padding=n // 2, evaluation="compiled")
    job = _dispatch.compile_job("jax", extract_job, **static)
    assert job.native._cache_size() == 1
    extract_patches_grouped(image, positions + 0.25, n, backend="jax")
    assert job.native._cache_size() == 1
    assert _verdicts()[0].native


def test_probe_runs_the_production_executable_tf():
    """TF traces (and XLA compiles) the native program for one signature: probe and call share it."""
    _require(Backend.TENSORFLOW)
    from ptycho.backends import _dispatch, extract_job, extract_patches_grouped

    image, positions, n = _data()
    extract_patches_grouped(image, positions, n, backend="tensorflow")
    static = dict(patch_size=n, interpolation="bilinear", channels=1, padding=n // 2, evaluation="compiled")
    job = _dispatch.compile_job("tensorflow", extract_job, **static)
    assert job.native.experimental_get_tracing_count() == 1
    extract_patches_grouped(image, positions + 0.25, n, backend="tensorflow")
    assert job.native.experimental_get_tracing_count() == 1


# -- programs that contract differently are caught ---------------------------------------------


def _forced(name):
    """``native_sum`` replaced by one alternative order, computed exactly inside the program."""
    from ptycho.backends import native

    def native_sum(weights, corners, *, xp):
        def product(x, y):  # the rounded product, behind a select no compiler contracts through
            return xp.where(xp.isnan(y), y, x * y)

        return native.orders(weights, corners, xp=xp, product=product)[name]

    return native_sum


def _alternatives_for_tf():
    from ptycho.backends import native

    plain = "((a*+b*)+c*)+d*"
    swapped = "fma(d, fma(c, fma(b, a*)))"
    return [plain, swapped, "[fma(a, b*)]+[fma(c, d*)]"] if plain in native.ALTERNATIVES else []


def _all_alternatives():
    from ptycho.backends import native

    return list(native.ALTERNATIVES)


@pytest.mark.parametrize("name", _all_alternatives())
def test_every_alternative_order_is_caught_jax(name, monkeypatch):
    _require(Backend.JAX)
    _caught(Backend.JAX, name, monkeypatch)


@pytest.mark.parametrize("name", _alternatives_for_tf())
def test_alternative_orders_are_caught_tf(name, monkeypatch):
    _require(Backend.TENSORFLOW)
    _caught(Backend.TENSORFLOW, name, monkeypatch)


def _caught(backend, name, monkeypatch):
    from ptycho.backends import extract_patches_grouped, native, window

    monkeypatch.setattr(window, "native_sum", _forced(name))
    image, positions, n = _data(seed=5)
    with pytest.warns(native.NativeOrderWarning, match="emulation"):
        got = extract_patches_grouped(image, positions, n, channels=2, backend=backend.value)
    (verdict,) = _verdicts()
    assert not verdict.native and verdict.reason == "mismatch" and verdict.mismatches > 0
    assert verdict.computed == name  # the warning names the order the program computed
    assert _same_bits(got, _reference(image, positions, n, channels=2))
    # the switch is once per program: no second warning, still exact
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = extract_patches_grouped(image, positions, n, channels=2, backend=backend.value)
    assert _same_bits(again, got)


@pytest.mark.parametrize("backend", XLA)
def test_ptychopinns_bare_expression_is_checked(backend, monkeypatch):
    """PtychoPINN's sum as written leaves XLA to pick which product the first addition fuses;
    in the extraction program this XLA picks ``wb*Ib`` (measured): whatever it picks is checked."""
    _require(backend)
    from ptycho.backends import extract_patches_grouped, native, window

    def bare(weights, corners, *, xp):
        (wa, wb, wc, wd), (ia, ib, ic, id_) = weights, corners
        return wa * ia + wb * ib + wc * ic + wd * id_

    monkeypatch.setattr(window, "native_sum", bare)
    image, positions, n = _data(h=64, w=64, p=64, n=16, seed=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = extract_patches_grouped(image, positions, n, channels=4, backend=backend.value)
    (verdict,) = _verdicts()
    assert _same_bits(got, _reference(image, positions, n, channels=4))
    warned = [w for w in caught if issubclass(w.category, native.NativeOrderWarning)]
    assert bool(warned) == (not verdict.native)


@pytest.mark.parametrize("name", ["jax", "tensorflow"])
@pytest.mark.parametrize("flags", ["--xla_cpu_enable_fast_math=true", "--xla_cpu_use_fusion_emitters=false"])
def test_xla_flags_never_change_the_bits(flags, name, tmp_path):
    """A fresh process with XLA flags that change code generation: verified or caught, always exact."""
    from ptycho.testing import require_backend

    require_backend(name)
    script = textwrap.dedent(
        f"""
        import sys, warnings
        import numpy as np
        from ptycho.backends import extract_patches_grouped, native
        rng = np.random.default_rng(1)
        image = (rng.standard_normal((48, 40)) + 1j * rng.standard_normal((48, 40))).astype(np.complex64)
        positions = rng.uniform(-2, 44, (32, 2)).astype(np.float32)
        want = extract_patches_grouped(image, positions, 12, channels=4, backend="numpy").view(np.uint64)
        warnings.simplefilter("ignore", native.NativeOrderWarning)
        got = np.asarray(extract_patches_grouped(image, positions, 12, channels=4, backend="{name}"))
        verdict = native.verdicts()[-1]
        assert np.array_equal(np.ascontiguousarray(got).view(np.uint64), want), "{name}"
        print("{name}", verdict.reason)
        """
    )
    env = dict(os.environ, XLA_FLAGS=flags, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PTYCHO_NATIVE_ORDER", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verified" in result.stdout or "mismatch" in result.stdout


# -- what is not verified is not trusted ------------------------------------------------------


def test_traced_calls_run_the_emulation(jax):
    """Inside a caller's jax.jit the program is the caller's: the emulated order, no verdict."""
    from ptycho.backends import extract_patches_grouped

    image, positions, n = _data()
    with jax.enable_x64(True):
        traced = jax.jit(lambda img, pos: extract_patches_grouped(img, pos, n, backend="jax"))(
            jax.numpy.asarray(image), jax.numpy.asarray(positions))
    assert _verdicts() == []
    assert _same_bits(traced, _reference(image, positions, n))


@pytest.mark.parametrize("backend", XLA)
def test_unverifiable_probe_runs_the_emulation(backend):
    """A 1 x 1 object: no probe can tell the orders apart, so the program is not trusted."""
    _require(backend)
    from ptycho.backends import extract_patches_grouped

    image, positions, _ = _data(h=1, w=1, p=4)
    got = extract_patches_grouped(image, positions, 4, backend=backend.value)
    (verdict,) = _verdicts()
    assert not verdict.native and verdict.reason.startswith("unverifiable")
    assert _same_bits(got, _reference(image, positions, 4))


@pytest.mark.parametrize("backend", XLA)
def test_native_order_off(backend, monkeypatch):
    _require(backend)
    from ptycho.backends import extract_patches_grouped

    monkeypatch.setenv("PTYCHO_NATIVE_ORDER", "0")
    image, positions, n = _data()
    got = extract_patches_grouped(image, positions, n, backend=backend.value)
    assert _verdicts() == []
    assert _same_bits(got, _reference(image, positions, n))


# -- the translate job: per-translation sources, output origins, PtychoPINN's entries ----------


@pytest.mark.parametrize("backend", XLA)
@pytest.mark.parametrize("per_source", [False, True], ids=["shared", "per-translation"])
def test_translate_job_with_origins(backend, per_source):
    _require(backend)
    from ptycho.backends import translate

    rng = np.random.default_rng(7)
    p = 12
    images = (rng.standard_normal((p if per_source else 1, 30, 34))
              + 1j * rng.standard_normal((p if per_source else 1, 30, 34))).astype(np.complex64)
    t = rng.uniform(-6, 6, (p, 2)).astype(np.float32)
    origin = rng.integers(0, 12, (p, 2))
    got = translate(images, t, output_size=(10, 14), output_origin=origin, backend=backend.value)
    want = translate(images, t, output_size=(10, 14), output_origin=origin, backend="numpy")
    assert _same_bits(got, want)
    (verdict,) = _verdicts("translate_job")
    assert verdict.native


def test_ptychopinn_fixture_native_and_emulated(tf, monkeypatch):
    """PtychoPINN's own bits, by its entry points, with the native order and without."""
    from tests.test_ptychopinn_fixture import _flat, fixture

    from ptycho.backends import extract_patches, extract_patches_grouped
    from ptycho.raw_data import get_image_patches

    d = fixture()
    names = [n for n in ("jax", "tensorflow") if Backend(n).installed()]  # JAX is optional here (tox 'tf')
    runs = {}
    for mode in ("native", "emulated"):
        if mode == "emulated":
            monkeypatch.setenv("PTYCHO_NATIVE_ORDER", "0")
        out = {"tf": get_image_patches(d["grouped_object"], d["grouped_global"], d["grouped_local"],
                                       N=int(d["grouped_N"]), gridsize=int(d["grouped_gridsize"]))}
        for name in names:
            out[name + "-single"] = extract_patches(d["single_object"], d["single_positions"], int(d["single_N"]),
                                                    backend=name)
            out[name + "-grouped"] = extract_patches_grouped(
                d["grouped_object"], _flat(d["grouped_global"], d["grouped_local"]), int(d["grouped_N"]),
                channels=int(d["grouped_gridsize"]) ** 2, backend=name)
        runs[mode] = out
        if mode == "native":
            assert _verdicts() and all(v.native for v in _verdicts())
    for mode, out in runs.items():
        assert _same_bits(out["tf"], d["grouped_jit"]), mode
        for name in names:
            assert _same_bits(out[name + "-single"], d["single_jit"]), (mode, name)
            assert _same_bits(out[name + "-grouped"], d["grouped_jit"]), (mode, name)


# -- the probe itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    [
        dict(sources=1, source_shape=(392, 392), count=20000, output_size=(64, 64), source_origin=(32, 32),
             channels=4),
        dict(sources=1, source_shape=(456, 456), count=2, output_size=(456, 456), source_origin=(0, 0), channels=1),
        dict(sources=7, source_shape=(20, 20), count=7, output_size=(11, 11), source_origin=(0, 0), channels=1),
        dict(sources=1, source_shape=(9, 9), count=3, output_size=(5, 5), source_origin=(2, 2), channels=3),
    ],
    ids=["reference", "full-frame", "per-source-prime", "tiny"],
)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["c64", "c128"])
def test_probe_tells_every_alternative_apart(layout, dtype):
    from ptycho.backends import native

    real = np.float64 if dtype == np.complex128 else np.float32
    spec = native._Layout(has_origin=False, complex_dtype=np.dtype(dtype), real_dtype=np.dtype(real), **layout)
    probe, reason = native._probe(spec)
    assert probe is not None, reason
    planes = native._host_orders(spec, probe.sources, probe.translations, probe.origin)
    assert native._tells_apart(planes, layout["output_size"][1] * layout["channels"]) is None
    groups = layout["count"] // layout["channels"]
    assert groups % probe.period_groups == 0
    assert probe.expected.shape == (probe.period_groups,) + tuple(layout["output_size"]) + (layout["channels"],)


def test_single_full_frame_translation_is_unverifiable():
    """One full-frame translation overhangs the source at its first or its last row: no probe tells
    every order apart at both ends, so such a program runs the emulation."""
    from ptycho.backends import native

    spec = native._Layout(sources=1, source_shape=(40, 40), count=1, output_size=(40, 40), source_origin=(0, 0),
                          channels=1, has_origin=False, complex_dtype=np.dtype(np.complex64),
                          real_dtype=np.dtype(np.float32))
    probe, reason = native._probe(spec)
    assert probe is None and reason.startswith("unverifiable")
