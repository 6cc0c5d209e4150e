"""ptycho: fast, exact patch extraction for ptychography.

Importing :mod:`ptycho` is cheap: it imports neither TensorFlow nor JAX.  The
heavy backends load only when a function that needs them is called.

Entry points
------------
- :func:`ptycho.backends.extract_patches` -- patches (P, N, N) at positions
  (P, 2) in (x, y) object pixels, on NumPy, JAX or TensorFlow.
- :func:`ptycho.raw_data.get_image_patches` -- the PtychoPINN-compatible call
  (channel format (B, N, N, c)), production path on TensorFlow/XLA.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
