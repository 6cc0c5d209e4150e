"""Arrays stay where they live: proxies for a second device, and GPU cells where one is visible.

Without a GPU, a second device is simulated:

- JAX: two host devices (``--xla_force_host_platform_device_count=2``) under
  ``jax.transfer_guard("disallow")``, which turns any implicit transfer
  (host round trip, move to device 0) into an error;
- TensorFlow: two logical CPUs, and ``.device`` of every result;
- PyTorch: the ``meta`` device, on which an array created without
  ``device=`` (on the CPU) cannot be combined with the inputs.

Both XLA set-ups must happen before the library initialises its devices, so
they run in a fresh interpreter.  ``PTYCHO_TEST_DEVICE=gpu`` demands the GPU
cells (a missing GPU then fails instead of skipping).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ptycho.testing import assert_close, to_numpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script: str, env: dict) -> str:
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path, **env}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          env=full_env, timeout=600)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    return done.stdout


JAX_TWO_DEVICES = """
import numpy as np, jax
from ptycho.backends import extract_patches, extract_patches_grouped, translate

assert len(jax.devices()) == 2, jax.devices()
second = jax.devices()[1]
rng = np.random.default_rng(0)
for dtype in (np.complex64, np.complex128):
    obj = (rng.standard_normal((30, 41)) + 1j * rng.standard_normal((30, 41))).astype(dtype)
    pos = rng.uniform(-6, 45, (24, 2)).astype(np.float32)
    with jax.enable_x64(True):
        image = jax.device_put(obj, second)
        positions = jax.device_put(pos, second)
    # (slicing a committed array sends its start index from the host: done before the guard)
    sources, first = image[None], positions[:4]
    for evaluation in ("compiled", "plain"):
        with jax.transfer_guard("disallow"):
            out = extract_patches(image, positions, 8, evaluation=evaluation)
            grouped = extract_patches_grouped(image, positions, 8, channels=4, evaluation=evaluation)
            moved = translate(sources, -first, output_size=(8, 8), evaluation=evaluation)
            out.block_until_ready(); grouped.block_until_ready(); moved.block_until_ready()
        for result in (out, grouped, moved):
            assert result.devices() == {second}, result.devices()
        ref = extract_patches(obj, pos, 8, backend="numpy", evaluation=evaluation)
        assert np.array_equal(np.asarray(out), ref), "values differ on the second device"
    # host positions with a device image: the computation still runs on the image's device
    out = extract_patches(image, pos, 8)
    assert out.devices() == {second}, out.devices()
print("ok")
"""


PLACEMENT_CASES = """
rng = np.random.default_rng(1)
patches = (rng.standard_normal((40, 8, 8)) + 1j * rng.standard_normal((40, 8, 8))).astype(np.complex64)
pos = rng.uniform(-3, 33, (40, 2)).astype(np.float32)
weights = rng.uniform(0.5, 1, (8, 8)).astype(np.float32)
grouped = {"Y": patches.reshape(10, 4, 8, 8).transpose(0, 2, 3, 1),
           "coords_nn": pos.reshape(10, 4, 2).transpose(0, 2, 1)[:, None].astype(np.float64)}

def entries(w):
    # every placement entry: (name, call(patches, positions, evaluation, ordered))
    return {
        "place": lambda a, b, e, o: place_patches(a, b, (30, 30), ordered=o),
        "stitch": lambda a, b, e, o: place_patches(a, b, (30, 30), normalize=True, ordered=o),
        "weighted_stitch": lambda a, b, e, o: place_patches(a, b, (30, 30), weights=w, normalize=True,
                                                            return_coverage=True, ordered=o),
        "shift_and_sum": lambda a, b, e, o: shift_and_sum(a, b, 6, evaluation=e, ordered=o),
        "reassemble_position": lambda a, b, e, o: reassemble_position(a, b, 6, evaluation=e, ordered=o),
    }

def equal(got, ref, name):
    got = got if isinstance(got, tuple) else (got,)
    ref = ref if isinstance(ref, tuple) else (ref,)
    for g, r in zip(got, ref):
        on_second(g)
        assert np.array_equal(np.asarray(g), np.asarray(r)), name + ": values differ on the second device"

reference = {name: {(e, o): call(patches, pos, e, o) for e in ("compiled", "plain") for o in (False, True)}
             for name, call in entries(weights).items()}
"""


JAX_PLACEMENT_TWO_DEVICES = """
import numpy as np, jax
from ptycho.backends import place_patches, placement
from ptycho.backends.placement import reassemble_position, shift_and_sum
from ptycho.cli.stitch import stitch

second = jax.devices()[1]

def on_second(x):
    assert x.devices() == {second}, x.devices()
""" + PLACEMENT_CASES + """
with jax.enable_x64(True):
    p, q, w = (jax.device_put(a, second) for a in (patches, pos, weights))
for name, call in entries(w).items():
    for (e, o), ref in reference[name].items():
        with jax.transfer_guard("disallow"):
            got = call(p, q, e, o)
            jax.block_until_ready(got)
        equal(got, ref, f"{name} {e} ordered={o}")
    with jax.transfer_guard("disallow"):  # positions on the host: sent explicitly
        equal(call(p, pos, "compiled", False), reference[name][("compiled", False)], name + " host positions")
placement.CHUNK_UPDATES = 4 * 64 * 7  # chunks of 7 patches (5 windows), cut on the device
for name, call in entries(w).items():
    for o in (False, True):
        with jax.transfer_guard("disallow"):
            got = call(p, q, "compiled", o)
            jax.block_until_ready(got)
        equal(got, reference[name][("compiled", o)], f"{name} ordered={o}, chunked")
with jax.transfer_guard("disallow"):
    out = stitch(grouped, (30, 30), backend="jax", device=second)
ref = stitch(grouped, (30, 30), backend="numpy")
assert all(np.array_equal(out[k], ref[k]) for k in ("object", "coverage")), "stitch differs"
print("ok")
"""


def test_jax_placement_stays_on_a_second_device(jax):
    """Every placement entry, both evaluation orders, ordered or not, one chunk or several, on a second
    device under ``jax.transfer_guard("disallow")``: it runs there, with no implicit transfer, and gives
    the NumPy backend's bits (the stitch's Python entry: its canvases, fetched explicitly)."""
    out = _run(JAX_PLACEMENT_TWO_DEVICES, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                                           "JAX_PLATFORMS": "cpu"})
    assert out.strip().endswith("ok")


TF_PLACEMENT_TWO_DEVICES = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from ptycho import tf_helper
from ptycho.backends import place_patches
from ptycho.backends.placement import reassemble_position, shift_and_sum
from ptycho.cli.stitch import stitch

def on_second(t):
    assert t.device.endswith("CPU:1"), t.device
""" + PLACEMENT_CASES + """
with tf.device("/CPU:1"):
    p, q, w = tf.constant(patches), tf.constant(pos), tf.constant(weights)
    p4, q4 = tf.constant(patches[..., None]), tf.constant(pos.reshape(-1, 1, 1, 2))
for name, call in entries(w).items():
    for (e, o), ref in reference[name].items():
        with tf.device("/CPU:1"):
            equal(call(p, q, e, o), ref, f"{name} {e} ordered={o}")
    equal(call(p, q, "compiled", True), reference[name][("compiled", True)], name + ", no scope")  # where p lives
for e in ("compiled", "plain"):
    with tf.device("/CPU:1"):
        summed = tf_helper.shift_and_sum(p4, q4, 6, evaluation=e)
        divided = tf_helper.reassemble_position(p4, q4, 6, evaluation=e)
    on_second(summed); on_second(divided)
    assert np.array_equal(summed.numpy()[..., 0], reference["shift_and_sum"][(e, False)])
    assert np.array_equal(divided.numpy(), tf_helper.reassemble_position(patches[..., None], pos.reshape(-1, 1, 1, 2),
                                                                          6, evaluation=e).numpy())
out = stitch(grouped, (30, 30), backend="tensorflow", device="/CPU:1")
ref = stitch(grouped, (30, 30), backend="numpy")
assert all(np.array_equal(out[k], ref[k]) for k in ("object", "coverage")), "stitch differs"
print("ok")
"""


def test_tensorflow_placement_on_a_second_logical_device(tf):
    """Every placement entry (and tf_helper's) under ``tf.device`` of a second logical CPU, both
    evaluation orders, ordered or not: the result lives there, bit for bit the NumPy backend."""
    out = _run(TF_PLACEMENT_TWO_DEVICES, {})
    assert out.strip().endswith("ok")


def test_jax_second_device_under_transfer_guard(jax):
    out = _run(JAX_TWO_DEVICES, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"})
    assert out.strip().endswith("ok")


TF_TWO_DEVICES = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from ptycho.backends import extract_patches
from ptycho.config.config import ModelConfig
from ptycho.raw_data import get_image_patches
from ptycho.tf_helper import translate

rng = np.random.default_rng(1)
obj = (rng.standard_normal((30, 41)) + 1j * rng.standard_normal((30, 41))).astype(np.complex64)
pos = rng.uniform(-6, 45, (24, 2)).astype(np.float32)
with tf.device("/CPU:1"):
    image = tf.constant(obj)
    positions = tf.constant(pos)
    padded = tf.constant(obj[None, :, :, None])

def on_second(t):
    assert t.device.endswith("CPU:1"), t.device

out = extract_patches(image, positions, 8)
on_second(out)
assert np.array_equal(out.numpy(), extract_patches(obj, pos, 8, backend="numpy"))

moved = translate(padded, -pos[:5], output_size=(8, 8))
on_second(moved)

glob = pos.reshape(6, 4, 2).transpose(0, 2, 1)[:, None]          # (B, 1, 2, c)
loc = np.zeros_like(glob)
whole = get_image_patches(obj, glob, loc, N=8, gridsize=2)
for size in (None, 8):
    config = ModelConfig(N=8, gridsize=2, patch_extraction_batch_size=size)
    Y = get_image_patches(image, glob, loc, config=config)
    on_second(Y)
    assert np.array_equal(Y.numpy(), whole.numpy())
print("ok")
"""


def test_tensorflow_second_logical_device(tf):
    out = _run(TF_TWO_DEVICES, {})
    assert out.strip().endswith("ok")


@pytest.mark.parametrize("on_host", [True, False], ids=["host-buffer", "device-buffer"])
def test_chunked_tensorflow_assembly(tf, monkeypatch, on_host):
    """Both ways of assembling chunks (CPU: an adopted host buffer; accelerators: a buffer on the device)."""
    from ptycho import tf_patches
    from ptycho.raw_data import _get_image_patches_batched
    from ptycho.tf_helper import pad

    monkeypatch.setattr(tf_patches, "_assembles_on_host", lambda device: on_host)
    rng = np.random.default_rng(4)
    obj = (rng.standard_normal((50, 60)) + 1j * rng.standard_normal((50, 60))).astype(np.complex64)
    padded = pad(obj[None, :, :, None], 8)
    offsets = rng.uniform(0, 50, (12, 1, 2, 1)).astype(np.float32)
    whole = _get_image_patches_batched(padded, offsets, 16, 3, 4)
    chunked = _get_image_patches_batched(padded, offsets, 16, 3, 4, mini_batch_size=5)
    assert_close(chunked, whole.numpy(), backend="tensorflow", exact=True)


def test_torch_meta_device_catches_host_creation():
    """Every array the algorithm creates goes with its inputs: meta in, meta out."""
    torch = pytest.importorskip("torch", reason="PyTorch is optional (the CI installs the CPU build)")
    from ptycho.backends import extract_patches

    image = torch.empty((20, 30), dtype=torch.complex64, device="meta")
    positions = torch.empty((5, 2), dtype=torch.float32, device="meta")
    for evaluation in ("compiled", "plain"):
        out = extract_patches(image, positions, 8, evaluation=evaluation)
        assert out.device.type == "meta" and tuple(out.shape) == (5, 8, 8)


def test_torch_foreign_positions_are_validated():
    torch = pytest.importorskip("torch", reason="PyTorch is optional (the CI installs the CPU build)")
    from ptycho.backends import extract_patches
    from ptycho.errors import InputError

    image = torch.zeros((20, 30), dtype=torch.complex64)
    with pytest.raises(InputError, match="positions must be finite"):
        extract_patches(image, torch.tensor([[1.0, float("nan")]]), 8)
    with pytest.raises(InputError, match="shape"):
        extract_patches(image, torch.zeros((3, 3)), 8)


# ---------------------------------------------------------------------------
# Index width: int64 where int32 would wrap, never a silent clamp.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("evaluation", ["compiled", "plain"])
def test_wide_indices_give_the_same_patches(backend, monkeypatch, evaluation):
    """Forcing the int64 path (a tiny int32 limit) changes no bit."""
    from ptycho.backends import extract_patches, translate, window

    rng = np.random.default_rng(2)
    obj = (rng.standard_normal((30, 41)) + 1j * rng.standard_normal((30, 41))).astype(np.complex64)
    pos = rng.uniform(-6, 45, (12, 2))
    sources = np.stack([obj, obj[::-1], obj * 2j])
    narrow = to_numpy(extract_patches(obj, pos, 8, backend=backend.value, evaluation=evaluation))
    narrow_many = to_numpy(translate(sources, -pos[:3], output_size=(8, 8), backend=backend.value,
                                     evaluation=evaluation))
    monkeypatch.setattr(window, "_INT32_MAX", 64)
    from ptycho import backends

    backends.clear_compile_cache()  # recompile with the new limit
    try:
        wide = extract_patches(obj, pos, 8, backend=backend.value, evaluation=evaluation)
        wide_many = translate(sources, -pos[:3], output_size=(8, 8), backend=backend.value, evaluation=evaluation)
    finally:
        backends.clear_compile_cache()
    assert_close(wide, narrow, backend=backend.value, exact=True)
    assert_close(wide_many, narrow_many, backend=backend.value, exact=True)


def test_index_width_choice():
    import array_api_compat.numpy as xp

    from ptycho.backends import window

    assert window._index_dtype(2**31 - 1, xp=xp) == xp.int32
    assert window._index_dtype(2**31, xp=xp) == xp.int64


def test_jax_without_64_bit_indices_refuses(jax):
    """JAX outside 64-bit mode has no int64: an index that needs it is an error, not a wrap."""
    from ptycho.backends import get_backend, window
    from ptycho.errors import InputError

    namespace = get_backend("jax").namespace
    with jax.enable_x64(False):
        with pytest.raises(InputError, match="int32"):
            window._index_dtype(2**31, xp=namespace)
    with jax.enable_x64(True):
        assert window._index_dtype(2**31, xp=namespace) == namespace.int64


# ---------------------------------------------------------------------------
# GPU cells: the same extraction on a visible GPU, bit for bit (skipped elsewhere).
# ---------------------------------------------------------------------------

GPU_LIBRARIES = ("jax", "torch", "cupy")


def _gpu_array(library: str, array: np.ndarray):
    if library == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if not gpus:
            pytest.skip("JAX sees no GPU")
        with jax.enable_x64(True):
            return jax.device_put(array, gpus[0])
    if library == "torch":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("PyTorch sees no CUDA GPU")
        return torch.from_numpy(array).to("cuda")
    cupy = pytest.importorskip("cupy")
    return cupy.asarray(array)


@pytest.mark.gpu
@pytest.mark.parametrize("evaluation", ["compiled", "plain"])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["complex64", "complex128"])
@pytest.mark.parametrize("library", GPU_LIBRARIES)
def test_gpu_extraction_is_exact_and_stays_on_the_gpu(library, dtype, evaluation):
    from ptycho.backends import extract_patches

    rng = np.random.default_rng(3)
    obj = (rng.standard_normal((64, 80)) + 1j * rng.standard_normal((64, 80))).astype(dtype)
    pos = rng.uniform(-10, 90, (64, 2)).astype(np.float32 if dtype == np.complex64 else np.float64)
    image, positions = _gpu_array(library, obj), _gpu_array(library, pos)
    out = extract_patches(image, positions, 16, evaluation=evaluation)
    where = str(getattr(out, "device", None) or out.devices())
    assert "cpu" not in where.lower(), f"result left the GPU: {where}"
    ref = extract_patches(obj, pos, 16, backend="numpy", evaluation=evaluation)
    assert_close(to_numpy(out), ref, exact=True)


def test_demanded_gpu_fails_without_one():
    """PTYCHO_TEST_DEVICE=gpu turns the GPU cells from skips into failures when no GPU is visible."""
    from ptycho.testing import demanded_device

    assert demanded_device({"PTYCHO_TEST_DEVICE": "gpu"}) == "gpu"
    assert demanded_device({}) == "cpu"
    with pytest.raises(ValueError, match="PTYCHO_TEST_DEVICE"):
        demanded_device({"PTYCHO_TEST_DEVICE": "tpu"})
