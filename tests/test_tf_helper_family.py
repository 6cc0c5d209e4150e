"""tf_helper's model-side patch family: windowed operations vs PtychoPINN's dense formulation.

The reference below is PtychoPINN's formulation written out here with
whole-frame translations (``tf_helper.translate`` on the full frame, the
compiled order, which equals PtychoPINN's ``translate_xla`` bit for bit):
extraction = repeat the padded object per patch, translate the whole frame
by the offset, crop the centre; reassembly = zero-pad each patch to the
padded size, translate the whole frame by minus its recentred offset, sum.
The windowed operations must give the same bits where the dense sums are
sequential (real input), and agree to rounding elsewhere; gradients agree
with the dense formulation's and with finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import random_object

N, PADDED, B, GRIDSIZE = 8, 16, 3, 2
C = GRIDSIZE**2


@pytest.fixture
def geometry(tf):
    """params N and gridsize as the model sets them (restored afterwards)."""
    from ptycho import params

    saved = dict(params.cfg)
    params.cfg.update({"N": N, "gridsize": GRIDSIZE})
    yield tf
    params.cfg.clear()
    params.cfg.update(saved)


def _offsets(seed: int = 4, groups: int = B, scale: float = 2.5) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((groups, 1, 2, C)) * scale).astype(np.float32)


# -- PtychoPINN's dense formulation, our words -----------------------------------------


def dense_extract(tf, imgs, offsets):
    from ptycho import tf_helper as th

    flat = th._channel_to_flat(tf.repeat(imgs, C, axis=3))
    full = th.translate(flat, th.flatten_offsets(offsets))
    m = imgs.shape[1]
    clip = (m - N) // 2
    return full[:, clip : m - clip, clip : m - clip, :]


def dense_frames(tf, patches, offsets, padded=PADDED):
    from ptycho import tf_helper as th

    flat = tf.cast(th.flatten_offsets(offsets), tf.float32)
    centred = flat - tf.reduce_mean(flat, axis=0, keepdims=True)
    big = th.pad_patches(th._channel_to_flat(patches), padded, N=N)
    return th.translate(big, -centred)


def dense_per_group(tf, patches, offsets):
    from ptycho import tf_helper as th

    return tf.reduce_sum(th._flat_to_channel(dense_frames(tf, patches, offsets)), axis=3, keepdims=True)


# -- extraction -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.complex64, np.float32])
def test_extract_patches_position_equals_dense(geometry, dtype):
    tf = geometry
    from ptycho import tf_helper as th

    obj = random_object((B, PADDED, PADDED, 1), np.complex64, 1)
    obj = obj if dtype == np.complex64 else obj.real.astype(np.float32)
    got = th.extract_patches_position(obj, _offsets())
    assert got.dtype == tf.as_dtype(dtype) and tuple(got.shape) == (B * C, N, N, 1)
    np.testing.assert_array_equal(got.numpy(), dense_extract(tf, tf.constant(obj), _offsets()).numpy())


def test_extract_shared_object_and_layout(geometry):
    """A batch-1 object serves every group (not tiled); patch b*c + k is group b, channel k."""
    tf = geometry
    from ptycho import tf_helper as th

    obj = random_object((1, PADDED, PADDED, 1), np.complex64, 2)
    off = _offsets()
    got = th.extract_patches_position(obj, off).numpy()
    tiled = th.extract_patches_position(np.repeat(obj, B, axis=0), off).numpy()
    np.testing.assert_array_equal(got, tiled)
    one = th.extract_patches_position(obj, off[1:2, :, :, :]).numpy()
    np.testing.assert_array_equal(got[C : 2 * C], one)


def test_extract_inside_tf_function_with_unknown_batch(geometry):
    tf = geometry
    from ptycho import tf_helper as th

    obj = random_object((B, PADDED, PADDED, 1), np.complex64, 3)
    spec = [tf.TensorSpec([None, PADDED, PADDED, 1], tf.complex64), tf.TensorSpec([None, 1, 2, C], tf.float32)]
    traced = tf.function(lambda a, b: th.extract_patches_position(a, b), input_signature=spec, autograph=False)
    np.testing.assert_array_equal(traced(obj, _offsets()).numpy(), th.extract_patches_position(obj, _offsets()).numpy())


def test_extract_gradient_matches_dense_and_finite_differences(geometry):
    tf = geometry
    from ptycho import tf_helper as th

    obj = tf.Variable(random_object((B, PADDED, PADDED, 1), np.complex64, 5))
    off = _offsets()
    weights = tf.constant(random_object((B * C, N, N, 1), np.complex64, 6))

    def loss(fn, x):
        return tf.reduce_sum(tf.math.real(tf.math.conj(weights) * fn(x)))

    grads = []
    for fn in (lambda x: th.extract_patches_position(x, off), lambda x: dense_extract(tf, x, off)):
        with tf.GradientTape() as tape:
            value = loss(fn, obj)
        grads.append(tape.gradient(value, obj).numpy())
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-5)
    # the loss is linear in the object: a finite difference along a direction is exact up to rounding
    direction = random_object((B, PADDED, PADDED, 1), np.complex64, 7)
    step = 1e-2
    fd = (loss(lambda x: th.extract_patches_position(x, off), obj + step * direction)
          - loss(lambda x: th.extract_patches_position(x, off), obj - step * direction)) / (2 * step)
    analytic = np.sum(np.real(np.conj(grads[0]) * direction))
    assert abs(float(fd) - analytic) <= 1e-3 * max(1.0, abs(analytic))


# -- reassembly -----------------------------------------------------------------------


def test_reassemble_position_real_equals_dense(geometry):
    """Real patches (what the model passes): the same bits; agg=False: each patch's frame, the same bits."""
    tf = geometry
    from ptycho import tf_helper as th

    patches = random_object((B, N, N, C), np.complex64, 8)
    real = patches.real.astype(np.float32)
    got = th._reassemble_patches_position_real(real, _offsets(), padded_size=PADDED)
    assert got.dtype == tf.float32 and tuple(got.shape) == (B, PADDED, PADDED, 1)
    np.testing.assert_array_equal(got.numpy(), dense_per_group(tf, tf.constant(real), _offsets()).numpy())
    frames = th._reassemble_patches_position_real(patches, _offsets(), agg=False, padded_size=PADDED)
    assert tuple(frames.shape) == (B, PADDED, PADDED, C)
    np.testing.assert_array_equal(frames.numpy(), th._flat_to_channel(dense_frames(tf, tf.constant(patches), _offsets())).numpy())


def test_reassemble_complex_sum_agrees_to_rounding(geometry):
    """Complex patches: TensorFlow's complex reduce_sum pairs channels in SIMD order; we add in patch order."""
    tf = geometry
    from ptycho import tf_helper as th

    patches = random_object((B, N, N, C), np.complex64, 9)
    got = th._reassemble_patches_position_real(patches, _offsets(), padded_size=PADDED).numpy()
    ref = dense_per_group(tf, tf.constant(patches), _offsets()).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=4e-6 * max(1.0, np.abs(ref).max()))


def test_batched_regimes(geometry):
    """Fewer patches than batch_size: per group; otherwise one canvas of every patch, chunk by chunk."""
    tf = geometry
    from ptycho import tf_helper as th

    real = random_object((B, N, N, C), np.complex64, 10).real
    off = _offsets()
    per_group = th._reassemble_position_batched(real, off, PADDED, batch_size=64)
    np.testing.assert_array_equal(per_group.numpy(), dense_per_group(tf, tf.constant(real), off).numpy())
    one = th._reassemble_position_batched(real, off, PADDED, batch_size=5)
    assert tuple(one.shape) == (1, PADDED, PADDED, 1)
    frames = dense_frames(tf, tf.constant(real), off).numpy()
    canvas = np.zeros(frames.shape[1:], np.float32)
    for lo in range(0, B * C, 5):
        chunk = np.zeros_like(canvas)
        for frame in frames[lo : lo + 5]:
            chunk = chunk + frame
        canvas = canvas + chunk
    np.testing.assert_array_equal(one.numpy()[0], canvas)
    spec = [tf.TensorSpec([None, N, N, C], tf.float32), tf.TensorSpec([None, 1, 2, C], tf.float32)]
    traced = tf.function(lambda a, b: th._reassemble_position_batched(a, b, PADDED, batch_size=64), input_signature=spec, autograph=False)
    np.testing.assert_array_equal(traced(real, off).numpy(), per_group.numpy())


def test_reassemble_patches_model_layer_equals_four_calls(geometry):
    """The fused path (both parts in one pass, the normaliser once) gives PtychoPINN's four calls' bits."""
    tf = geometry
    from ptycho import tf_helper as th

    patches = random_object((B, N, N, C), np.complex64, 11)
    off = _offsets()
    fn = th.mk_reassemble_position_batched_real(off, batch_size=64, padded_size=PADDED, N=N, gridsize=GRIDSIZE)
    got = th.reassemble_patches(patches, fn_reassemble_real=fn, N=N, gridsize=GRIDSIZE)
    generic = th.reassemble_patches(patches, fn_reassemble_real=lambda x, **kw: fn(x), N=N, gridsize=GRIDSIZE)
    assert got.dtype == tf.complex64 and tuple(got.shape) == (B, PADDED, PADDED, 1)
    np.testing.assert_array_equal(got.numpy(), generic.numpy())

    def dense_fn(x, **kwargs):
        return dense_per_group(tf, x, off)

    ref = th.reassemble_patches(patches, fn_reassemble_real=dense_fn, N=N, gridsize=GRIDSIZE)
    np.testing.assert_array_equal(got.numpy(), ref.numpy())


def test_reassembly_gradient_matches_dense(geometry):
    tf = geometry
    from ptycho import tf_helper as th

    x = tf.Variable(random_object((B, N, N, C), np.complex64, 12).real)
    off = _offsets()
    weights = tf.constant(random_object((B, PADDED, PADDED, 1), np.complex64, 13).real)
    grads = []
    for fn in (lambda v: th._reassemble_patches_position_real(v, off, padded_size=PADDED), lambda v: dense_per_group(tf, v, off)):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(weights * fn(x))
        grads.append(tape.gradient(value, x).numpy())
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-5)
    direction = random_object((B, N, N, C), np.complex64, 14).real
    step = 1e-2
    f = lambda v: float(tf.reduce_sum(weights * th._reassemble_patches_position_real(v, off, padded_size=PADDED)))
    fd = (f(x + step * direction) - f(x - step * direction)) / (2 * step)
    analytic = float(np.sum(grads[0] * direction))
    assert abs(fd - analytic) <= 1e-3 * max(1.0, abs(analytic))


def test_keras_model_round_trip_with_unknown_batch(geometry):
    """Reassemble then extract inside a Keras model, traced with an unknown batch, with gradients."""
    tf = geometry
    from ptycho import tf_helper as th

    class Reassemble(tf.keras.layers.Layer):
        def call(self, inputs):
            fn = th.mk_reassemble_position_batched_real(inputs[1], padded_size=PADDED, N=N, gridsize=GRIDSIZE)
            return th.reassemble_patches(inputs[0], fn_reassemble_real=fn, N=N, gridsize=GRIDSIZE)

        def compute_output_shape(self, shapes):
            return (shapes[0][0], PADDED, PADDED, 1)

    class Extract(tf.keras.layers.Layer):
        def call(self, inputs):
            return th.extract_patches_position(inputs[0], inputs[1], 0.0, N=N, gridsize=GRIDSIZE)

        def compute_output_shape(self, shapes):
            return (None, N, N, 1)

    patches_in = tf.keras.Input((N, N, C), dtype="complex64")
    positions = tf.keras.Input((1, 2, C))
    obj = Reassemble(dtype="complex64")([patches_in, positions])
    model = tf.keras.Model([patches_in, positions], Extract(dtype="complex64")([obj, positions]))
    patches, off = random_object((B, N, N, C), np.complex64, 15), tf.constant(_offsets())
    eager = model([tf.constant(patches), off])
    assert tuple(eager.shape) == (B * C, N, N, 1)
    x = tf.Variable(patches)
    spec = [tf.TensorSpec([None, 1, 2, C], tf.float32)]

    def step(o):
        with tf.GradientTape() as tape:
            out = model([x, o])
            value = tf.reduce_sum(tf.abs(out) ** 2)
        return out, tape.gradient(value, x)

    out, grad = tf.function(step, input_signature=spec, autograph=False)(off)
    np.testing.assert_array_equal(out.numpy(), eager.numpy())
    _, grad_eager = step(off)
    np.testing.assert_allclose(grad.numpy(), grad_eager.numpy(), rtol=1e-5, atol=1e-5 * np.abs(grad_eager.numpy()).max())


# -- Translation layer, translate_core, should_use_xla ----------------------------------


def test_translation_layer_config_and_jitter(geometry):
    tf = geometry
    from ptycho import tf_helper as th

    layer = th.Translation(jitter_stddev=0.5, use_xla=False, name="shift")
    config = layer.get_config()
    assert config["jitter_stddev"] == 0.5 and config["use_xla"] is True
    clone = th.Translation.from_config(config)
    assert clone.jitter_stddev == 0.5 and clone.name == "shift"
    images = random_object((2, 12, 12, 1), np.complex64, 16)
    t = np.array([[1.5, -2.25], [0.0, 3.0]], np.float32)
    plain = th.Translation()([images, t])
    np.testing.assert_array_equal(plain.numpy(), th.translate(images, t).numpy())
    tf.random.set_seed(0)
    jittered = clone([images, t])
    assert not np.array_equal(jittered.numpy(), plain.numpy())


def test_translate_core_paths_and_broadcast(geometry, monkeypatch):
    tf = geometry
    from ptycho import params
    from ptycho import tf_helper as th

    images = random_object((4, 12, 12, 1), np.complex64, 17).real
    t = np.array([[1.25, -0.5], [2.0, 3.5]], np.float32)
    xla = th.translate_core(images, t, use_xla_workaround=True).numpy()
    cyclic = th.translate(images, t[[0, 1, 0, 1]]).numpy()
    np.testing.assert_array_equal(xla, cyclic)
    monkeypatch.setattr(th, "should_use_xla", lambda: False)
    native = th.translate_core(images, t).numpy()
    repeated = th.translate(images, t[[0, 0, 1, 1]]).numpy()
    np.testing.assert_allclose(native, repeated, atol=1e-5)
    monkeypatch.undo()
    monkeypatch.setenv("USE_XLA_TRANSLATE", "0")
    assert th.should_use_xla() is False
    monkeypatch.delenv("USE_XLA_TRANSLATE")
    monkeypatch.setitem(params.cfg, "use_xla_translate", False)
    assert th.should_use_xla() is False
    monkeypatch.setitem(params.cfg, "use_xla_translate", None)
    assert th.should_use_xla() is True


def test_center_channels_undoes_offsets(geometry):
    tf = geometry
    from ptycho import tf_helper as th

    channels = random_object((B, 12, 12, C), np.complex64, 18)
    off = np.round(_offsets(scale=1.0))  # integer offsets: the round trip is exact inside
    moved = th._flat_to_channel(th.translate(th._channel_to_flat(channels), th.flatten_offsets(off)))
    back = th.center_channels(moved, off).numpy()
    np.testing.assert_allclose(back[:, 4:8, 4:8], channels[:, 4:8, 4:8], atol=1e-6)


# -- layouts and small helpers ----------------------------------------------------------


def test_grid_layouts_round_trip(geometry):
    tf = geometry
    from ptycho import tf_helper as th

    flat = np.arange(B * C * N * N, dtype=np.float32).reshape(B * C, N, N, 1)
    grid = th._togrid(flat)
    assert tuple(grid.shape) == (B, GRIDSIZE, GRIDSIZE, N, N, 1)
    np.testing.assert_array_equal(th._fromgrid(grid).numpy(), flat)
    channel = th._grid_to_channel(grid)
    np.testing.assert_array_equal(channel.numpy(), th._flat_to_channel(flat).numpy())
    np.testing.assert_array_equal(th.togrid(flat)[0].numpy(), grid.numpy())
    np.testing.assert_array_equal(th.grid_to_channel(grid)[0].numpy(), channel.numpy())
    np.testing.assert_array_equal(th.channel_to_flat(channel)[0].numpy(), flat)
    np.testing.assert_array_equal(th._flat_to_channel_2(flat).numpy(), channel.numpy())
    patches = th._channel_to_patches(channel).numpy()
    assert patches.shape == (B, GRIDSIZE, GRIDSIZE, N * N)
    np.testing.assert_array_equal(patches[1, 1, 0], flat[1 * C + 2, :, :, 0].ravel())
    offsets = _offsets()
    np.testing.assert_array_equal(th.flatten_offsets(offsets).numpy()[C + 3], offsets[1, 0, :, 3])


def test_pad_trim_and_regular_grid_patches(geometry):
    tf = geometry
    from ptycho import params
    from ptycho import tf_helper as th

    x = random_object((2, N, N, 1), np.complex64, 19).real
    padded = th.pad_patches(x, PADDED)
    assert tuple(padded.shape) == (2, PADDED, PADDED, 1)
    np.testing.assert_array_equal(th.trim_reconstruction(padded).numpy(), x)
    assert tuple(th.pad_reconstruction(np.zeros((2, N, N, C), np.float32)).shape) == (2 * C, params.get_padded_size(), params.get_padded_size(), 1)
    offset = 2
    side = N + (GRIDSIZE - 1) * offset
    region = random_object((2, side, side, 1), np.complex64, 20).real
    cut = th.extract_patches(region, N, offset)
    assert tuple(cut.shape) == (2, GRIDSIZE, GRIDSIZE, N * N)
    averaged = th.extract_patches_inverse(cut, N, True, gridsize=GRIDSIZE, offset=offset)
    np.testing.assert_allclose(averaged.numpy(), region, rtol=1e-6)
    summed = th.extract_patches_inverse(tf.ones_like(cut), N, False, gridsize=GRIDSIZE, offset=offset).numpy()
    assert summed.max() == GRIDSIZE**2 and summed.min() == 1


def test_center_mask_and_complex_helpers(geometry):
    tf = geometry
    from ptycho import tf_helper as th

    mask = th.mk_centermask(np.zeros((2, N, N, C), np.float32), N, C).numpy()
    assert mask.shape == (2, N, N, C) and mask.sum() == 2 * C * (N // 2) ** 2 and mask[0, N // 2, N // 2, 0] == 1
    border = th.CenterMaskLayer(N, C, kind="border")
    assert th.CenterMaskLayer.from_config(border.get_config()).kind == "border"
    np.testing.assert_array_equal(border(np.zeros((2, N, N, C), np.float32)).numpy(), 1 - mask)
    amp, phi = np.float32([[1.0, 2.0]]), np.float32([[0.0, np.pi / 2]])
    z = th.combine_complex(amp, phi)
    np.testing.assert_allclose(z.numpy(), amp * np.exp(1j * phi), atol=1e-6)
    assert th.is_complex_tensor(z) and not th.is_complex_tensor(tf.constant(amp))
    doubled = th.complexify_function(lambda x: 2 * x)
    np.testing.assert_array_equal(doubled(z).numpy(), (2 * z).numpy())
    assert th.complexify_sum_real_imag(lambda x: x)(tf.constant([1 + 2j])).numpy()[0] == 3


# -- the benchmark, tiny ----------------------------------------------------------------


def test_training_bench_runs_tiny(tf, tmp_path, capsys):
    """``python -m ptycho.bench --training`` at a tiny size: every row, identical forward results."""
    import json

    from ptycho.bench import training

    out = tmp_path / "rows.json"
    assert training.main(["--groups", "2", "--N", "8", "--padded-size", "12", "--repeats", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [r["operation"] for r in rows] == [op[1] for op in training.OPERATIONS]
    assert all(name in text for _, name, _ in training.OPERATIONS)
    assert rows[0]["max_diff"] == 0.0  # extraction: the same bits
    # reassembly of complex patches: TensorFlow's complex sums pair terms in SIMD order, ours add in order
    assert all(r["max_diff"] <= 4e-6 * max(1.0, r["max_ref"]) for r in rows[1:3])
    assert all(r["grad_max_diff"] <= 1e-4 * max(1.0, r["grad_max_ref"]) for r in rows)
    with pytest.raises(SystemExit):
        training.main(["--padded-size", "4", "--N", "8"])


def test_keras_fit_trains_through_the_family(geometry):
    """model.fit (graph mode, unknown batch: both of PtychoPINN's reassembly regimes in one program)."""
    tf = geometry
    from ptycho import tf_helper as th

    class Reassemble(tf.keras.layers.Layer):
        def call(self, inputs):
            fn = th.mk_reassemble_position_batched_real(inputs[1], batch_size=16, padded_size=PADDED, N=N, gridsize=GRIDSIZE)
            return th.reassemble_patches(inputs[0], fn_reassemble_real=fn, N=N, gridsize=GRIDSIZE)

        def compute_output_shape(self, shapes):
            return (shapes[0][0], PADDED, PADDED, 1)

    class Extract(tf.keras.layers.Layer):
        def call(self, inputs):
            flat = th.extract_patches_position(inputs[0], inputs[1], 0.0, N=N, gridsize=GRIDSIZE)
            return tf.abs(th._flat_to_channel(flat, gridsize=GRIDSIZE))

        def compute_output_shape(self, shapes):
            return (shapes[1][0], N, N, C)

    x_in, pos = tf.keras.Input((N, N, C)), tf.keras.Input((1, 2, C))
    hidden = tf.keras.layers.Conv2D(C, 3, padding="same")(x_in)
    complex_patches = tf.keras.layers.Lambda(lambda t: tf.cast(t, tf.complex64))(hidden)
    model = tf.keras.Model([x_in, pos], Extract()([Reassemble()([complex_patches, pos]), pos]))
    model.compile(optimizer="adam", loss="mse", jit_compile=False)
    x = random_object((10, N, N, C), np.complex64, 21).real
    positions = _offsets(22, groups=10, scale=1.0)
    # batches of 6 groups (24 patches: one canvas) and a last batch of 4 (16: still one canvas), then 3 (per group)
    history = model.fit([x, positions], x, batch_size=6, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    history = model.fit([x[:6], positions[:6]], x[:6], batch_size=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
