"""PtychoPINN-compatible TF helpers: pad, layouts, translate, translate_xla, gradients."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import assert_close, random_object


def test_pad(tf):
    from ptycho.tf_helper import pad

    image = random_object((1, 5, 7, 1), np.complex64, 0)
    got = pad(image, 3)
    assert_close(got, np.pad(image, ((0, 0), (3, 3), (3, 3), (0, 0))), backend="tensorflow", exact=True)


@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_channel_flat_round_trip(tf, gridsize):
    from ptycho.tf_helper import _channel_to_flat, _flat_to_channel

    c = gridsize**2
    channel = np.arange(3 * 4 * 5 * c, dtype=np.float32).reshape(3, 4, 5, c)
    flat = _channel_to_flat(channel).numpy()
    assert flat.shape == (3 * c, 4, 5, 1)
    for b in range(3):
        for k in range(c):
            np.testing.assert_array_equal(flat[b * c + k, :, :, 0], channel[b, :, :, k])
    back = _flat_to_channel(flat, gridsize=gridsize)
    assert_close(back, channel, exact=True)


def test_flat_to_channel_uses_params(tf):
    from ptycho import params
    from ptycho.tf_helper import _flat_to_channel

    params.set("gridsize", 2)
    try:
        assert tuple(_flat_to_channel(np.zeros((8, 3, 3, 1), np.float32)).shape) == (2, 3, 3, 4)
    finally:
        params.reset()


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_window_equals_corner_of_full_translation(tf, dtype, interpolation):
    """translate-then-slice == slice of the full-image translation, bit for bit."""
    from ptycho.tf_helper import translate

    image = random_object((1, 30, 41, 1), dtype, 1)
    shifts = np.array([[-3.25, 7.5], [12.999999, -0.5], [0.0, 0.0], [-40.2, 3.3]])
    full = np.stack([translate(image, shifts[i : i + 1], interpolation=interpolation).numpy()[0] for i in range(4)])
    window = translate(image, shifts, interpolation=interpolation, output_size=(9, 13))
    assert_close(window, full[:, :9, :13], backend="tensorflow", shape=(4, 9, 13, 1), dtype=dtype, exact=True)


def test_translate_matches_tensorflow_native_kernel(tf):
    """Our XLA path vs TF's ImageProjectiveTransformV3 (PtychoPINN's non-XLA path)."""
    from ptycho.tf_helper import translate, translate_core

    image = random_object((1, 24, 31, 1), np.complex64, 2)
    shifts = np.array([[2.25, -1.5], [-7.75, 3.125], [0.5, 0.5]], dtype=np.float32)
    ours = translate(np.repeat(image, 3, axis=0), shifts)
    native = translate_core(image, shifts)
    assert_close(ours, native.numpy(), backend="tensorflow", dtype=np.complex64)


@pytest.mark.parametrize("evaluation", ["compiled", "plain"])
def test_eager_and_jit_agree(tf, evaluation):
    """Compiled by XLA or run eagerly, one evaluation order gives the same bits."""
    from ptycho.projective_warp_xla import translate_xla

    image = random_object((2, 16, 20, 1), np.complex64, 3)
    shifts = np.array([[1.5, -2.25], [3.75, 0.125]])
    assert_close(
        translate_xla(image, shifts, use_jit=False, evaluation=evaluation),
        translate_xla(image, shifts, use_jit=True, evaluation=evaluation).numpy(),
        backend="tensorflow",
        exact=True,
    )


@pytest.mark.parametrize("use_jit, evaluation", [(True, "compiled"), (False, "plain")])
def test_use_jit_chooses_ptychopinns_order(tf, use_jit, evaluation):
    """As in PtychoPINN: use_jit=True is the compiled order, use_jit=False the plain one."""
    from ptycho.backends import translate
    from ptycho.projective_warp_xla import translate_xla

    image = random_object((1, 16, 20, 1), np.complex64, 4)
    shifts = np.array([[1.3, -2.7], [3.9, 0.1], [-0.45, 5.55]])
    expected = translate(image[..., 0], shifts, backend="numpy", evaluation=evaluation)  # (3, 16, 20, 1)
    assert_close(translate_xla(image, shifts, use_jit=use_jit), expected, backend="tensorflow", exact=True)


def test_real_images_stay_real_and_channels_translate_together(tf):
    from ptycho.tf_helper import translate

    rng = np.random.default_rng(4)
    image = rng.standard_normal((1, 12, 14, 3)).astype(np.float32)
    shifts = np.array([[1.25, 2.5], [-3.5, 0.75]])
    got = translate(image, shifts)
    assert got.dtype == tf.float32 and tuple(got.shape) == (2, 12, 14, 3)
    for ch in range(3):
        single = translate(image[..., ch : ch + 1], shifts).numpy()
        np.testing.assert_array_equal(got.numpy()[..., ch : ch + 1], single)


def test_channels_layout_matches_flat_to_channel(tf):
    from ptycho.tf_helper import _flat_to_channel, translate

    image = random_object((1, 20, 20, 1), np.complex64, 5)
    shifts = np.random.default_rng(5).uniform(-15, 5, (8, 2))
    flat = translate(image, shifts, output_size=(6, 6))
    channel = translate(image, shifts, output_size=(6, 6), channels=4)
    assert_close(channel, _flat_to_channel(flat, gridsize=2).numpy(), backend="tensorflow", exact=True)


def _loss_inputs():
    rng = np.random.default_rng(6)
    re = rng.standard_normal((18, 22)).astype(np.float32)
    im = rng.standard_normal((18, 22)).astype(np.float32)
    shifts = rng.uniform(-12, 2, (5, 2)).astype(np.float32)
    target = (rng.standard_normal((5, 8, 8, 1)) + 1j * rng.standard_normal((5, 8, 8, 1))).astype(np.complex64)
    return re, im, shifts, target


def test_gradients_agree_between_tensorflow_and_jax(tf, jax):
    """d loss / d (object, shifts) on TF and JAX, loss = sum |window - target|^2."""
    import jax.numpy as jnp

    from ptycho.backends import translate as _translate

    def jax_translate(*args, **kwargs):
        return _translate(*args, backend="jax", **kwargs)
    from ptycho.tf_helper import translate

    re, im, shifts, target = _loss_inputs()
    re_v, im_v, sh_v = tf.Variable(re), tf.Variable(im), tf.Variable(shifts)
    with tf.GradientTape() as tape:
        image = tf.complex(re_v, im_v)[None, :, :, None]
        out = translate(image, sh_v, output_size=(8, 8))
        loss = tf.reduce_sum(tf.abs(out - target) ** 2)
    g_re, g_im, g_sh = (g.numpy() for g in tape.gradient(loss, [re_v, im_v, sh_v]))

    def jax_loss(re_, im_, sh_):
        image = jax.lax.complex(re_, im_)[None]
        out = jax_translate(image, sh_, output_size=(8, 8))
        return jnp.sum(jnp.abs(out - target) ** 2)

    j_re, j_im, j_sh = (np.asarray(g) for g in jax.grad(jax_loss, argnums=(0, 1, 2))(re, im, shifts))
    assert np.any(g_re) and np.any(g_sh)
    for tf_grad, jax_grad in ((g_re, j_re), (g_im, j_im), (g_sh, j_sh)):
        scale = max(1.0, float(np.max(np.abs(tf_grad))))
        np.testing.assert_allclose(tf_grad, jax_grad, rtol=0, atol=1e-5 * scale)


def test_gradient_matches_finite_differences(tf):
    """The object gradient is the adjoint of the (linear) extraction."""
    from ptycho.tf_helper import translate

    re, im, shifts, target = _loss_inputs()
    re64, im64 = re.astype(np.float64), im.astype(np.float64)
    re_v = tf.Variable(re64)
    with tf.GradientTape() as tape:
        out = translate(tf.complex(re_v, tf.constant(im64))[None, :, :, None], shifts.astype(np.float64), output_size=(8, 8))
        loss = tf.reduce_sum(tf.abs(out - target.astype(np.complex128)) ** 2)
    grad = tape.gradient(loss, re_v).numpy()

    def value(re_):
        out = translate((re_ + 1j * im64)[None, :, :, None], shifts.astype(np.float64), output_size=(8, 8))
        return float(tf.reduce_sum(tf.abs(out - target.astype(np.complex128)) ** 2))

    eps = 1e-6
    for (r, c) in [(9, 11), (0, 0), (17, 21), (4, 15)]:
        bump = np.zeros_like(re64)
        bump[r, c] = eps
        numeric = (value(re64 + bump) - value(re64 - bump)) / (2 * eps)
        assert abs(numeric - grad[r, c]) <= 1e-5 * max(1.0, abs(numeric))
