"""Pictures of datasets and grouped patches (``ptycho-patches show`` and ``demo``).

Three figures, drawn on matplotlib's Agg canvas (no display, no pyplot
global state):

- :func:`plot_dataset` -- a PtychoPINN-format dataset: object amplitude and
  phase with the scan positions, the probe, one diffraction frame (log
  scale) and the object patches cut at numbered sample positions;
- :func:`plot_grouped` -- a grouped NPZ: one group's members (where they
  are, their patch boxes, amplitude, phase and diffraction of each channel)
  and sample ``Y`` patches of other groups;
- :func:`plot_overview` -- the dataset and its groups on one page (the
  demo's picture).

Every axis is in pixels: object panels in object pixel coordinates (x the
column, y the row, the coordinates of the scan positions), patches in patch
pixels, diffraction frames in detector pixels.  Phase uses a cyclic colour
map on [-pi, pi]; diffraction is log10 of the intensity |amplitude|^2.

matplotlib is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np
from ptycho.dataset import check_grouped
from ptycho.errors import InputError


__all__ = ["plot_dataset", "plot_grouped", "plot_overview", "render_png", "save_figure"]

AMPLITUDE_CMAP = "viridis"
PHASE_CMAP = "twilight"
DIFFRACTION_CMAP = "magma"
#: One colour per group member (channel k), the same in every panel.
MEMBER_COLOURS = ("#e6194b", "#1f9bff", "#ffd700", "#ff7f0e", "#b04fd9", "#00c8c8", "#f032e6",
                  "#8fd40c", "#a0522d")
SAMPLE_BOX_COLOUR = "#ff4040"
#: Intensities below peak * DIFFRACTION_FLOOR are drawn at the floor (7 decades shown).
DIFFRACTION_FLOOR = 1e-7
#: Most members drawn for one group (gridsize 3 has 9).
MAX_MEMBERS = 9


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def plot_dataset(raw: Any, *, n_patches: int = 6, seed: int = 0, source: Optional[str] = None) -> Any:
    """Draw a dataset: object and scan, probe, a diffraction frame, sample patches.

    Parameters
    ----------
    raw : ptycho.dataset.RawData
        The dataset.  Without ``objectGuess`` (measured data) the scan
        positions and the diffraction frames at the sample positions are
        drawn instead of the object and its patches.
    n_patches : int, default 6
        Number of sample positions, spread over the scan.
    seed : int, default 0
        Seed of the choice of sample positions.
    source : str, optional
        Name of the file, shown in the title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    xy = _scan_xy(raw)
    probe = np.asarray(raw.probeGuess)
    N = int(probe.shape[0])
    diff3d = np.asarray(raw.diff3d)
    samples = _spread_indices(xy, n_patches, seed)
    obj = _object_of(raw)
    # The object row is as tall as two side-by-side object panels need.
    shape = obj.shape if obj is not None else (np.ptp(xy[:, 1]) + N, np.ptp(xy[:, 0]) + N)
    heights = [_object_row_height(shape, panel_width=6.6), 4.6, 4.8]
    fig = _new_figure((16.0, sum(heights)))
    top, middle, bottom = fig.subfigures(3, 1, height_ratios=heights)

    ax_amp, ax_phase = top.subplots(1, 2)
    if obj is not None:
        _object_panel(top, ax_amp, obj, "amplitude", xy, N=N, samples=samples,
                      title=f"object amplitude; {len(xy)} scan positions, red boxes: sample patches")
        _object_panel(top, ax_phase, obj, "phase", xy, N=N, samples=samples, title="object phase (rad)")
    else:
        _scan_panel(ax_amp, xy, samples, title=f"scan: {len(xy)} positions (the file has no objectGuess)")
        # Measured data: the mean pattern shows the beam centre, a beam stop, hot pixels.
        mean_frame = np.sqrt(np.mean(np.abs(diff3d.astype(np.float64)) ** 2, axis=0))
        _diffraction_panel(top, ax_phase, mean_frame, title=f"mean diffraction of the {len(diff3d)} frames")

    ax_pa, ax_pp, ax_d = middle.subplots(1, 3)
    _image_panel(middle, ax_pa, np.abs(probe), "amplitude", title=f"probe amplitude ({N}x{N})")
    _image_panel(middle, ax_pp, _masked_phase(probe), "phase", title="probe phase (rad), where amplitude > 2% of peak")
    first = int(samples[0])
    _diffraction_panel(middle, ax_d, diff3d[first], title=f"diffraction at #1 (frame {first})")

    if obj is not None:
        from ptycho.backends import extract_patches

        patches = np.asarray(extract_patches(obj, xy[samples], N, backend="numpy"))
        labels = [f"#{i + 1}  x={xy[s, 0]:.1f} y={xy[s, 1]:.1f}" for i, s in enumerate(samples)]
        _complex_rows(bottom, patches, labels, heading=f"object patches {N}x{N} at the numbered positions")
    else:
        labels = [[f"#{i + 1}  frame {s}" for i, s in enumerate(samples)]]
        _diffraction_rows(bottom, diff3d[samples][None], labels, heading="diffraction at the numbered positions")

    fig.suptitle(_join(source, _dataset_text(raw)), fontsize=15, fontweight="bold")
    return fig


def plot_grouped(grouped: Any, *, group: Optional[int] = None, n_patches: int = 6, seed: int = 0,
                 source: Optional[str] = None) -> Any:
    """Draw grouped patches: one group's members and sample ``Y`` patches of others.

    Parameters
    ----------
    grouped : mapping
        The output of ``generate_grouped_data`` / ``load_grouped``:
        ``coords_nn`` (G, 1, 2, c), ``coords_offsets`` (G, 1, 2, 1), and
        ``Y`` (G, N, N, c) and/or ``diffraction`` (G, H, W, c).  When
        ``objectGuess`` is present it is drawn under the scan positions.
    group : int, optional
        The group whose members are drawn (default: the group nearest the
        middle of the scan).
    n_patches : int, default 6
        Number of other groups whose channel-0 patch is drawn.
    seed : int, default 0
        Seed of the choice of those groups.
    source : str, optional
        Name of the file, shown in the title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    Y, coords_nn, centres, diffraction = _grouped_arrays(grouped)
    G, c = coords_nn.shape[0], coords_nn.shape[3]
    N = _patch_side(grouped, Y, diffraction)
    g = _central_group(centres) if group is None else _group_index(group, G)
    obj = grouped.get("objectGuess") if hasattr(grouped, "get") else None
    fig = _new_figure((16.0, 12.5))
    upper, lower = fig.subfigures(2, 1, height_ratios=[1.3, 1.0])
    _group_block(upper, Y, diffraction, coords_nn, centres, g, N)
    scan_fig, samples_fig = lower.subfigures(1, 2, width_ratios=[1.0, 2.6])
    _whole_scan_panel(scan_fig, coords_nn, centres, g, N, background=obj)
    others = _other_groups(G, g, n_patches, seed)
    if Y is not None:
        labels = [f"group {o}\nx={coords_nn[o, 0, 0, 0]:.1f} y={coords_nn[o, 0, 1, 0]:.1f}" for o in others]
        _complex_rows(samples_fig, Y[others, :, :, 0], labels, heading="sample patches of other groups, Y[g, :, :, 0]")
    else:
        labels = [[f"group {o}, member 0" for o in others]]
        _diffraction_rows(samples_fig, diffraction[others, :, :, 0][None], labels,
                          heading="diffraction of other groups, member 0 (no Y: the dataset had no object)")
    what = f"{G} groups x {c} members" + (f", patches {N}x{N}" if Y is not None else ", no Y")
    fig.suptitle(_join(source, f"grouped data: {what} (gridsize {_gridsize_text(c)})"),
                 fontsize=15, fontweight="bold")
    return fig


def plot_overview(raw: Any, grouped: Any, *, group: Optional[int] = None, n_patches: int = 6, seed: int = 0,
                  title: str = "ptycho-patches demo") -> Any:
    """One page: the dataset with one group drawn on the object, its members, sample patches.

    Parameters
    ----------
    raw : ptycho.dataset.RawData
        The dataset, with ``objectGuess``.
    grouped : mapping
        Its grouped data, with ``Y`` (see :func:`plot_grouped`).
    group, n_patches, seed
        As in :func:`plot_grouped`.
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    Y, coords_nn, centres, diffraction = _grouped_arrays(grouped)
    obj = _object_of(raw)
    if Y is None or obj is None:
        raise InputError("plot_overview needs the object: raw.objectGuess and grouped['Y'] must be present")
    G, N, _, c = Y.shape
    g = _central_group(centres) if group is None else _group_index(group, G)
    xy = _scan_xy(raw)
    probe = np.asarray(raw.probeGuess)
    members = coords_nn[g, 0].T  # (c, 2) x, y

    heights = [max(_object_row_height(obj.shape, panel_width=5.2), 5.8), 7.2, 5.4]
    fig = _new_figure((16.0, sum(heights)))
    top, upper, lower = fig.subfigures(3, 1, height_ratios=heights)
    left, right = top.subfigures(1, 2, width_ratios=[2.0, 0.62])
    ax_amp, ax_phase = left.subplots(1, 2)
    _object_panel(left, ax_amp, obj, "amplitude", xy, N=N, members=members,
                  title=f"object amplitude, {len(xy)} scan positions")
    _object_panel(left, ax_phase, obj, "phase", xy, N=N, members=members, title="object phase (rad)")
    ax_pa, ax_pp = right.subplots(2, 1)
    _image_panel(right, ax_pa, np.abs(probe), "amplitude", title=f"probe amplitude ({probe.shape[0]}x{probe.shape[1]})",
                 small=True)
    _image_panel(right, ax_pp, _masked_phase(probe), "phase", title="probe phase (rad)", small=True)

    _group_block(upper, Y, diffraction, coords_nn, centres, g, N)
    others = _other_groups(G, g, n_patches, seed)
    labels = [f"group {o}  x={coords_nn[o, 0, 0, 0]:.1f} y={coords_nn[o, 0, 1, 0]:.1f}" for o in others]
    _complex_rows(lower, Y[others, :, :, 0], labels, heading="sample patches of other groups, Y[g, :, :, 0]")
    fig.suptitle(f"{title}: {len(xy)} scan positions -> {G} groups x {c} patches of {N}x{N} "
                 f"(gridsize {_gridsize_text(c)}); coloured boxes: group {g}", fontsize=15, fontweight="bold")
    return fig


def render_png(fig: Any, *, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes (drawn in memory), then release it."""
    import io

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        fig.clear()
    return buffer.getvalue()


def save_figure(fig: Any, path: "os.PathLike[str] | str", *, overwrite: bool = False, dpi: int = 100) -> None:
    """Write ``fig`` as a PNG atomically (never a partial file), then release it.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    from ptycho._io import atomic_write

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi), overwrite=overwrite)
    finally:
        fig.clear()


# ---------------------------------------------------------------------------
# Data helpers
# ---------------------------------------------------------------------------


def _new_figure(size: Sequence[float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=tuple(size), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _object_row_height(shape: Sequence[float], *, panel_width: float) -> float:
    """Inches for a row of object panels ``panel_width`` wide: the image plus title and labels."""
    aspect = float(shape[0]) / max(float(shape[1]), 1.0)
    return float(np.clip(panel_width * aspect, 2.6, 6.6)) + 1.3


def _object_of(raw: Any) -> Optional[np.ndarray]:
    obj = getattr(raw, "objectGuess", None)
    return None if obj is None else np.asarray(obj)


def _scan_xy(raw: Any) -> np.ndarray:
    """(M, 2) scan positions (x, y) in object pixels."""
    return np.stack([np.asarray(raw.xcoords, dtype=np.float64), np.asarray(raw.ycoords, dtype=np.float64)],
                    axis=1)


def _spread_indices(xy: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` scan indices spread over the scan (farthest-point order from a seeded start).

    Spread-out samples keep their boxes on the object apart, so the picture
    stays readable; the numbering follows the order of choice.
    """
    M = len(xy)
    n = max(1, min(int(n), M))
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(M))]
    distance = np.sum((xy - xy[chosen[0]]) ** 2, axis=1)
    while len(chosen) < n:
        nxt = int(np.argmax(distance))
        if distance[nxt] == 0:  # fewer distinct positions than n
            break
        chosen.append(nxt)
        distance = np.minimum(distance, np.sum((xy - xy[nxt]) ** 2, axis=1))
    return np.array(chosen, dtype=np.int64)


def _sample_indices(count: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct indices in [0, count), sorted, reproducible for a seed."""
    n = min(int(n), int(count))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=n, replace=False))


def _other_groups(G: int, exclude: int, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` groups other than ``exclude`` (``exclude`` itself when G is 1)."""
    pool = np.array([i for i in range(G) if i != exclude]) if G > 1 else np.array([exclude])
    return pool[_sample_indices(len(pool), n, seed)]


def _gridsize_text(c: int) -> str:
    root = int(round(c**0.5))
    return str(root) if root * root == c else f"sqrt({c})"


def _join(source: Optional[str], text: str) -> str:
    return f"{source}: {text}" if source else text


def _dataset_text(raw: Any) -> str:
    diff = np.asarray(raw.diff3d).shape
    obj = _object_of(raw)
    obj_text = "no object" if obj is None else f"object {obj.shape[0]}x{obj.shape[1]} (H x W)"
    return f"dataset, {obj_text}, {diff[0]} diffraction frames {diff[1]}x{diff[2]}"


def _grouped_arrays(grouped: Any) -> tuple[Optional[np.ndarray], np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """(Y or None, coords_nn (G, 1, 2, c), group centres (G, 2) as (x, y), diffraction or None)."""
    check_grouped(grouped, required=("coords_nn", "coords_offsets"), drawable=True)
    coords_nn = np.asarray(grouped["coords_nn"], dtype=np.float64)
    centres = np.asarray(grouped["coords_offsets"], dtype=np.float64)[:, 0, :, 0]
    fields = {key: np.asarray(grouped[key]) if grouped.get(key) is not None else None for key in ("Y", "diffraction")}
    return fields["Y"], coords_nn, centres, fields["diffraction"]


def _patch_side(grouped: Any, Y: Optional[np.ndarray], diffraction: Optional[np.ndarray]) -> int:
    """N for the patch boxes: from Y, else the probe, else the diffraction frames."""
    if Y is not None:
        return int(Y.shape[1])
    if "probeGuess" in grouped:
        return int(np.shape(grouped["probeGuess"])[0])
    return int(diffraction.shape[1])


def _central_group(centres: np.ndarray) -> int:
    """The group whose centre is nearest the middle of all centres (a representative one)."""
    middle = np.median(centres, axis=0)
    return int(np.argmin(np.sum((centres - middle) ** 2, axis=1)))


def _group_index(group: int, G: int) -> int:
    if not -G <= int(group) < G:
        raise InputError(f"group must be in [-{G}, {G}), got {group}")
    return int(group) % G


def _masked_phase(field: np.ndarray, level: float = 0.02) -> np.ndarray:
    """Phase of ``field``, NaN (drawn blank) where the amplitude is below ``level`` x its peak.

    Where there is almost no amplitude the phase is numerical noise; blanking
    it keeps the eye on the meaningful part.
    """
    amplitude = np.abs(field)
    phase = np.angle(field).astype(np.float64)
    phase[amplitude < level * float(amplitude.max() if amplitude.size else 0.0)] = np.nan
    return phase


def _log_intensity(frame: np.ndarray) -> np.ndarray:
    """log10 of the intensity |amplitude|^2, floored DIFFRACTION_FLOOR below its peak."""
    intensity = np.abs(np.asarray(frame, dtype=np.float64)) ** 2
    peak = float(intensity.max()) if intensity.size else 0.0
    floor = peak * DIFFRACTION_FLOOR if peak > 0 else 1e-12
    return np.log10(np.maximum(intensity, floor))


def _box_corner(x: float, y: float, N: int) -> tuple[float, float]:
    """Top-left corner, in imshow pixel-edge coordinates, of the N x N patch centred on (x, y).

    Patch pixel (r, q) samples the object at (x - N//2 + q, y - N//2 + r), so
    its edges run from x - N//2 - 0.5 to x - N//2 + N - 0.5.
    """
    return (x - N // 2 - 0.5, y - N // 2 - 0.5)


def _outlined(colour: str = "white") -> list:
    """A thin outline that keeps text and markers readable on any image."""
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2.5, foreground=colour)]


def _title_colour(colour: str) -> str:
    """A member colour darkened enough to read as text on white."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(colour)
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    scale = min(1.0, 0.5 / luminance) if luminance > 0 else 1.0
    return "#%02x%02x%02x" % tuple(int(255 * v * scale) for v in (r, g, b))


# ---------------------------------------------------------------------------
# Panels
# ---------------------------------------------------------------------------


def _pixel_axes(ax: Any, xlabel: bool = True, ylabel: bool = True, prefix: str = "") -> None:
    if xlabel:
        ax.set_xlabel(f"{prefix}x (px)")
    if ylabel:
        ax.set_ylabel(f"{prefix}y (px)")


def _phase_colorbar(fig: Any, mappable: Any, ax: Any, **kw: Any) -> Any:
    bar = fig.colorbar(mappable, ax=ax, ticks=[-np.pi, -np.pi / 2, 0, np.pi / 2, np.pi], **kw)
    bar.ax.set_yticklabels(["-\u03c0", "-\u03c0/2", "0", "\u03c0/2", "\u03c0"])
    return bar


def _image_panel(fig: Any, ax: Any, image: np.ndarray, kind: str, *, title: str, small: bool = False,
                 from_zero: bool = True) -> Any:
    """An amplitude (linear) or phase (cyclic, [-pi, pi]) image with its colour bar.

    Amplitude starts at 0 (``from_zero``, for the probe) or at the image's
    minimum (objects, whose contrast lives in a narrow band).
    """
    shrink = 0.9 if small else 0.8
    if kind == "phase":
        im = ax.imshow(image, cmap=PHASE_CMAP, vmin=-np.pi, vmax=np.pi, interpolation="nearest")
        _phase_colorbar(fig, im, ax, shrink=shrink, label="phase (rad)")
    else:
        im = ax.imshow(image, cmap=AMPLITUDE_CMAP, vmin=0 if from_zero else None, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=shrink, label="amplitude")
    ax.set_title(title, fontsize=10 if small else 12)
    _pixel_axes(ax)
    return im


def _object_panel(fig: Any, ax: Any, obj: np.ndarray, kind: str, xy: np.ndarray, *, N: int,
                  samples: Sequence[int] = (), members: Optional[np.ndarray] = None, title: str) -> None:
    """Object amplitude or phase with the scan positions and numbered sample or member boxes."""
    from matplotlib.patches import Rectangle

    image = np.abs(obj) if kind == "amplitude" else np.angle(obj)
    _image_panel(fig, ax, image, kind, title=title, from_zero=False)
    ax.scatter(xy[:, 0], xy[:, 1], s=7, c="white", edgecolors="black", linewidths=0.3, alpha=0.9)
    for i, s in enumerate(samples):
        x, y = xy[s]
        ax.add_patch(Rectangle(_box_corner(x, y, N), N, N, fill=False, edgecolor=SAMPLE_BOX_COLOUR, linewidth=1.6))
        ax.text(x - N // 2 + 2, y - N // 2 + 2, f"#{i + 1}", color=SAMPLE_BOX_COLOUR, fontsize=11,
                fontweight="bold", ha="left", va="top", path_effects=_outlined())
    if members is not None:
        for k, (x, y) in enumerate(members[:MAX_MEMBERS]):
            colour = MEMBER_COLOURS[k % len(MEMBER_COLOURS)]
            ax.add_patch(Rectangle(_box_corner(x, y, N), N, N, fill=False, edgecolor=colour, linewidth=2.0))
            ax.plot([x], [y], marker="o", ms=6, color=colour, markeredgecolor="black", linestyle="none")
    H, W = obj.shape
    # Boxes of edge positions may reach into the zero padding: keep the object's frame.
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)


def _scan_panel(ax: Any, xy: np.ndarray, samples: Sequence[int], *, title: str) -> None:
    ax.scatter(xy[:, 0], xy[:, 1], s=6, c="tab:blue")
    for i, s in enumerate(samples):
        ax.annotate(f"#{i + 1}", xy[s], color=SAMPLE_BOX_COLOUR, fontsize=11, fontweight="bold",
                    path_effects=_outlined())
    ax.set_aspect("equal")
    ax.invert_yaxis()  # rows grow downwards, as in the object images
    ax.set_title(title, fontsize=12)
    _pixel_axes(ax)


def _diffraction_panel(fig: Any, ax: Any, frame: np.ndarray, *, title: str) -> None:
    im = ax.imshow(_log_intensity(frame), cmap=DIFFRACTION_CMAP, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="log10 intensity")
    ax.set_title(f"{title}\nlog10 |amplitude|\u00b2", fontsize=12)
    _pixel_axes(ax, prefix="detector ")


def _style_cell(ax: Any, row: int, col: int, last_row: bool, colour: Optional[str], prefix: str = "") -> None:
    from matplotlib.ticker import MaxNLocator

    # Tick labels on the outer panels only (as with shared axes): they are the
    # same on every panel, and fewer texts make the layout much faster.
    ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(4, integer=True))
    ax.tick_params(labelsize=7.5, labelbottom=last_row, labelleft=col == 0)
    _pixel_axes(ax, xlabel=last_row, ylabel=col == 0, prefix=prefix)
    if colour is not None:
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)


def _complex_rows(fig: Any, patches: np.ndarray, labels: Sequence[str], *, heading: str,
                  colours: Optional[Sequence[str]] = None, diffraction: Optional[np.ndarray] = None) -> None:
    """Rows of patches (k, N, N): amplitude, phase (and log diffraction), a colour bar per row.

    Every panel of a row shares one colour scale, so patches compare at a glance.
    """
    k = len(patches)
    rows = 2 if diffraction is None else 3
    axes = fig.subplots(rows, k, squeeze=False)
    amplitude = np.abs(patches)
    vmin, vmax = float(amplitude.min()), float(amplitude.max())
    vmax = vmax if vmax > vmin else vmin + 1.0
    logs = None if diffraction is None else np.stack([_log_intensity(f) for f in diffraction])
    for j in range(k):
        colour = None if colours is None else colours[j]
        im_a = axes[0, j].imshow(amplitude[j], cmap=AMPLITUDE_CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
        im_p = axes[1, j].imshow(np.angle(patches[j]), cmap=PHASE_CMAP, vmin=-np.pi, vmax=np.pi,
                                 interpolation="nearest")
        style = {} if colour is None else {"color": _title_colour(colour), "fontweight": "bold"}
        axes[0, j].set_title(labels[j], fontsize=9.5, **style)
        _style_cell(axes[0, j], 0, j, False, colour)
        _style_cell(axes[1, j], 1, j, rows == 2, colour)
        if logs is not None:
            im_d = axes[2, j].imshow(logs[j], cmap=DIFFRACTION_CMAP, vmin=float(logs.min()), vmax=float(logs.max()),
                                     interpolation="nearest")
            _style_cell(axes[2, j], 2, j, True, colour, prefix="det. ")
    fig.colorbar(im_a, ax=list(axes[0]), shrink=0.9, pad=0.01, label="amplitude")
    _phase_colorbar(fig, im_p, list(axes[1]), shrink=0.9, pad=0.01, label="phase (rad)")
    if logs is not None:
        fig.colorbar(im_d, ax=list(axes[2]), shrink=0.9, pad=0.01, label="log10 intensity")
    fig.suptitle(heading, fontsize=13, fontweight="bold")


def _diffraction_rows(fig: Any, frames: np.ndarray, labels: Sequence[Sequence[str]], *, heading: str) -> None:
    """A grid (r, k, H, W) of diffraction frames in log scale, one colour scale.

    ``labels[i][j]`` titles cell (i, j); a cell whose label is None stays empty.
    """
    frames = np.asarray(frames)
    r, k = frames.shape[:2]
    axes = fig.subplots(r, k, squeeze=False)
    filled = [(i, j) for i in range(r) for j in range(k) if labels[i][j] is not None]
    logs = {(i, j): _log_intensity(frames[i, j]) for i, j in filled}
    vmin = min(float(v.min()) for v in logs.values())
    vmax = max(float(v.max()) for v in logs.values())
    for i in range(r):
        for j in range(k):
            if (i, j) not in logs:
                axes[i, j].set_axis_off()
                continue
            im = axes[i, j].imshow(logs[i, j], cmap=DIFFRACTION_CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
            axes[i, j].set_title(labels[i][j], fontsize=9.5)
            last = i == r - 1 or (i + 1, j) not in logs
            _style_cell(axes[i, j], i, j, last, None, prefix="detector ")
    fig.colorbar(im, ax=list(axes.ravel()), shrink=0.9, pad=0.01, label="log10 intensity")
    fig.suptitle(heading, fontsize=13, fontweight="bold")


def _group_block(fig: Any, Y: Optional[np.ndarray], diffraction: Optional[np.ndarray], coords_nn: np.ndarray,
                 centres: np.ndarray, g: int, N: int) -> None:
    """Group g: a close-up of its members (left) and each member's patch and diffraction (right)."""
    c = coords_nn.shape[3]
    shown = min(c, MAX_MEMBERS)
    if Y is not None:
        rows, cols = (3 if diffraction is not None else 2), shown
    else:  # diffraction only: a compact square-ish grid of the members
        cols = int(np.ceil(np.sqrt(shown)))
        rows = int(np.ceil(shown / cols))
    left, right = fig.subfigures(1, 2, width_ratios=[1.0, 0.3 + 0.95 * cols / rows])
    _close_up_panel(left, coords_nn, centres, g, N)
    labels = [f"member {k}\nx={coords_nn[g, 0, 0, k]:.1f} y={coords_nn[g, 0, 1, k]:.1f}" for k in range(shown)]
    colours = [MEMBER_COLOURS[k % len(MEMBER_COLOURS)] for k in range(shown)]
    more = f", first {shown} of {c} shown" if shown < c else ""
    frames = None if diffraction is None else np.moveaxis(diffraction[g, :, :, :shown], -1, 0)
    if Y is not None:
        what = "Y[g, :, :, k]" + (" and diffraction[g, :, :, k]" if frames is not None else "")
        _complex_rows(right, np.moveaxis(Y[g, :, :, :shown], -1, 0), labels, colours=colours, diffraction=frames,
                      heading=f"group {g}'s members: {what}{more}")
    else:
        grid = np.zeros((rows * cols,) + frames.shape[1:], dtype=frames.dtype)
        grid[:shown] = frames
        cells = labels + [None] * (rows * cols - shown)
        _diffraction_rows(right, grid.reshape((rows, cols) + frames.shape[1:]),
                          [cells[i * cols:(i + 1) * cols] for i in range(rows)],
                          heading=f"group {g}'s members: diffraction[g, :, :, k]{more}")


def _close_up_panel(fig: Any, coords_nn: np.ndarray, centres: np.ndarray, g: int, N: int) -> None:
    """Group g's members with their N x N patch boxes, among the neighbouring scan positions."""
    from matplotlib.patches import Rectangle

    ax = fig.subplots()
    members = coords_nn[g, 0].T  # (c, 2) as (x, y)
    used = np.unique(coords_nn[:, 0].transpose(0, 2, 1).reshape(-1, 2), axis=0)
    # Window: the members' boxes plus a margin of half a patch.
    lo = members.min(axis=0) - N
    hi = members.max(axis=0) + N
    ax.scatter(used[:, 0], used[:, 1], s=12, c="0.55", label="scan positions", zorder=2)
    for k in range(min(coords_nn.shape[3], MAX_MEMBERS)):
        x, y = members[k]
        colour = MEMBER_COLOURS[k % len(MEMBER_COLOURS)]
        ax.add_patch(Rectangle(_box_corner(x, y, N), N, N, fill=False, edgecolor=colour, linewidth=2.0, zorder=3))
        ax.plot([x], [y], marker="o", ms=9, color=colour, markeredgecolor="black", linestyle="none",
                label=f"member {k}", zorder=4)
    cx, cy = centres[g]
    ax.plot([cx], [cy], marker="+", ms=16, mew=2.5, color="black", linestyle="none",
            label="group centre", zorder=5)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(hi[1], lo[1])  # rows grow downwards, as in the object images
    ax.set_aspect("equal")
    ax.set_title(f"group {g}: members and their {N}x{N} patches", fontsize=12)
    _pixel_axes(ax, prefix="object ")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8.5, framealpha=0.95)


def _whole_scan_panel(fig: Any, coords_nn: np.ndarray, centres: np.ndarray, g: int, N: int, *,
                      background: Optional[np.ndarray]) -> None:
    """Every scan position used by a group, with group g's boxes; the object underneath when known."""
    from matplotlib.patches import Rectangle

    ax = fig.subplots()
    used = np.unique(coords_nn[:, 0].transpose(0, 2, 1).reshape(-1, 2), axis=0)
    if background is not None:
        im = ax.imshow(np.abs(background), cmap="gray", interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.6, label="object amplitude")
    ax.scatter(used[:, 0], used[:, 1], s=5, c="tab:blue", label="scan positions")
    for k in range(min(coords_nn.shape[3], MAX_MEMBERS)):
        x, y = coords_nn[g, 0, 0, k], coords_nn[g, 0, 1, k]
        ax.add_patch(Rectangle(_box_corner(x, y, N), N, N, fill=False, linewidth=1.6,
                               edgecolor=MEMBER_COLOURS[k % len(MEMBER_COLOURS)]))
    if background is None:
        ax.set_aspect("equal")
        ax.invert_yaxis()  # rows grow downwards, as in the object images
    ax.set_title(f"whole scan ({len(used)} positions in groups);\ncoloured boxes: group {g}", fontsize=11)
    _pixel_axes(ax, prefix="object ")
