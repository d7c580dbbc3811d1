"""Pictures: the catalog's accuracy/throughput trade-off, and a fine-tune's curves.

The data side (which rows are drawn, which are on the Pareto front, what a run
logged) is computed here without matplotlib and returned to the caller, so the
tests can check exactly what was plotted and a notebook can draw it on its own
axes. matplotlib is imported only inside the drawing functions, and files are
rendered through the Agg canvas of a standalone ``Figure`` (no pyplot, no global
backend switch), then written atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitzoo.atomic import atomic_write
from vitzoo.catalog.caveats import CAVEATS, codes_for
from vitzoo.catalog.frame import Frame
from vitzoo.catalog.query import Filters
from vitzoo.catalog.schema import ACCURACY_COLUMNS, COLUMN_NAMES, COLUMN_TYPES, COLUMNS
from vitzoo.errors import VitzooError
from vitzoo.names import ALL_ARCHS
from vitzoo.text import percent_axis

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: File formats ``vitzoo plot`` / ``plot-run`` can write, by suffix.
FORMATS = {".png": "png", ".svg": "svg"}
#: Pixels per inch used to turn ``--size WxH`` (pixels) into a figure size.
DPI = 100
#: Up to this many points every point gets its architecture written beside it;
#: above it only the Pareto front is labelled (the colours still say which is which).
LABEL_ALL_MAX = 40

_DOCS = {c.name: c.doc for c in COLUMNS}
_NUMERIC = {name for name, kind in COLUMN_TYPES.items() if kind in ("float", "int")}


#: The x column ``plot --local`` draws by default: what each run measured itself. The published
#: ``infer_samples_per_sec`` is a V100 inference figure that no local run has.
RUN_THROUGHPUT = "train_img_per_sec"
_DOCS[RUN_THROUGHPUT] = "images/s measured by the run while fine-tuning, from its run.json"


def run_throughput(frame: Frame) -> list[float | None]:
    """Per registered run, ``final_metrics.img_per_sec`` of the run.json beside its final.npz
    (None where there is none: a run registered by hand, a moved or deleted workdir)."""
    out: list[float | None] = []
    for url in frame.column("adapt_url"):
        value = None
        try:
            record = json.loads((Path(url).parent / "run.json").read_text(encoding="utf-8"))
            value = float(record["final_metrics"]["img_per_sec"])
        except (OSError, TypeError, KeyError, ValueError, json.JSONDecodeError):
            pass
        out.append(value if value and math.isfinite(value) else None)
    return out


def _nothing_known(subset: Frame, x: str, y: str, local_only: bool) -> VitzooError:
    """No row has both values: say how many lack which, and what would give them."""
    lack_x = sum(v is None for v in subset.column(x))
    lack_y = sum(v is None for v in subset.column(y))
    what = "registered runs" if local_only else "matching rows"
    problem = (f"none of the {subset.num_rows:,} {what} has both {y} and {x} known "
               f"({lack_y:,} lack {y}, {lack_x:,} lack {x})")
    options = _alternatives(subset, x, y)
    hint = (f"try {', '.join(options)}, or " if options else "")
    if local_only and x == RUN_THROUGHPUT:
        return VitzooError(problem, hint + "runs record their img/s in WORKDIR/run.json "
                           "(final_metrics.img_per_sec) when they finish; choose another --x otherwise")
    if local_only:
        return VitzooError(problem, hint + "local runs know adapt_final_val or adapt_final_test "
                           f"and {RUN_THROUGHPUT}; choose --x/--y among them")
    return VitzooError(problem, hint + "build the catalog from a real index.csv "
                       "(`vitzoo index build --source PATH`)")


# --- the scatter's data --------------------------------------------------------


@dataclass
class Scatter:
    """What ``vitzoo plot`` draws: every plotted row, and which of them form the front."""

    x: str
    y: str
    points: Frame  # rows with x and y known (and x > 0 for the log axis), catalog order
    front: Frame  # the Pareto front, a subset of ``points``, largest x first
    matched: int  # rows that passed the filters, drawn or not
    notes: list[str] = field(default_factory=list)

    @property
    def caveats(self) -> list[list[str]]:
        """Per point, the caveat codes of what places it: its x or y value, or its file."""
        return point_caveats(self.points, self.x, self.y)


def point_caveats(points: Frame, x: str, y: str) -> list[list[str]]:
    """Per row, the codes (:mod:`vitzoo.catalog.caveats`) that qualify its ``x`` or ``y`` value
    or the file itself (``checkpoint``); a plot draws those points hollow."""
    if "caveats" not in points.column_names:
        return [[] for _ in range(points.num_rows)]
    return [list(dict.fromkeys(code for column in (x, y, "checkpoint")
                               for code in codes_for(value, column)))
            for value in points.column("caveats")]


def _check_column(column: str, option: str) -> None:
    if column not in COLUMN_NAMES:
        raise VitzooError(f"unknown column {column!r} for {option}",
                          f"numeric columns are: {', '.join(c for c in COLUMN_NAMES if c in _NUMERIC)}")
    if column not in _NUMERIC:
        raise VitzooError(f"{option} {column} is not a numeric column",
                          f"numeric columns are: {', '.join(c for c in COLUMN_NAMES if c in _NUMERIC)}")


def _both_known(frame: Frame, x: str, y: str) -> list[bool]:
    return [a is not None and b is not None for a, b in zip(frame.column(x), frame.column(y),
                                                            strict=True)]


def _alternatives(frame: Frame, x: str, y: str) -> list[str]:
    """Accuracy columns that *would* give points against ``x`` for these rows."""
    out = []
    for column in ACCURACY_COLUMNS:
        if column == y:
            continue
        count = sum(_both_known(frame, x, column))
        if count:
            out.append(f"--y {column} ({count} points)")
    return out


def best_populated(frame: Frame, x: str) -> tuple[str, int]:
    """The accuracy column with the most rows that also know ``x`` (validation first on a tie)."""
    order = ("adapt_final_val", "adapt_final_test", "final_val", "final_test", "best_val")
    counts = {column: sum(_both_known(frame, x, column)) for column in order}
    column = max(order, key=lambda c: (counts[c], -order.index(c)))
    return column, counts[column]


def scatter_data(table: Frame, *, x: str = "infer_samples_per_sec", y: str | None = None,
                 filters: Filters | None = None, local_only: bool = False) -> Scatter:
    """Filter the catalog exactly as ``vitzoo list`` does and keep the rows ``x``/``y`` can place.

    The Pareto front is :func:`vitzoo.catalog.recommend.pareto_front` (higher is
    better on both axes, as for throughput and accuracy). Raises a
    :class:`VitzooError` naming columns that would work when no row has both values.
    """
    from vitzoo.catalog.api import run_query
    from vitzoo.catalog.recommend import pareto_front

    _check_column(x, "--x")
    if y is not None:
        _check_column(y, "--y")
    subset = run_query(table, filters=filters or Filters(), local_only=local_only)
    if subset.num_rows == 0:
        if local_only and not any(c == "local" for c in table.column("collection")):
            raise VitzooError("no registered runs to plot",
                              "`vitzoo finetune MODEL --dataset DS --workdir DIR` registers one")
        raise VitzooError("no catalog rows match these filters" if not local_only else
                          "no registered run matches these filters",
                          f"check them with `vitzoo list{' --local' if local_only else ''}` "
                          "and the same options")
    throughput_note = None
    if local_only and x == "infer_samples_per_sec":
        x = RUN_THROUGHPUT
        subset = subset.with_column(x, run_throughput(subset))
        throughput_note = (f"x axis: {x}, the images/s each run measured while fine-tuning "
                           "(its run.json); the published V100 figure is not known for your runs")
    chosen_note = None
    if y is None:  # no --y: the accuracy this catalog knows best for these rows, and say so
        y, count = best_populated(subset, x)
        chosen_note = (f"y axis: {y}, the accuracy column known for the most matching rows "
                       f"({count:,} with {x}); --y chooses another")
    known = subset.filter(_both_known(subset, x, y))
    if known.num_rows == 0:
        raise _nothing_known(subset, x, y, local_only)
    points = known.filter([v > 0 for v in known.column(x)])
    notes = []
    if points.num_rows < known.num_rows:
        notes.append(f"{known.num_rows - points.num_rows} rows with {x} <= 0 cannot be placed "
                     "on a log axis and are not drawn")
    if points.num_rows == 0:
        raise VitzooError(f"no matching row has {x} > 0, which a log axis needs",
                          "choose another --x")
    missing = subset.num_rows - known.num_rows
    if missing:
        notes.append(f"{missing:,} of {subset.num_rows:,} matching rows lack {x} or {y} "
                     "(unknown in this catalog) and are not drawn")
    front = pareto_front(points, y, x)
    notes.insert(0, f"{points.num_rows:,} points, {front.num_rows} on the Pareto front "
                    f"(higher {y} and higher {x} are better)")
    if chosen_note:
        notes.insert(0, chosen_note)
    if throughput_note:
        notes.insert(0, throughput_note)
    if y.endswith("_test"):
        notes.append(f"{y} is a test accuracy: fine to describe the trade-off, but choose "
                     "checkpoints by a validation column")
    data = Scatter(x=x, y=y, points=points, front=front, matched=subset.num_rows, notes=notes)
    codes = Counter(code for point in data.caveats for code in point)
    for code, count in codes.most_common():
        notes.append(f"{count:,} hollow points: {code}: {CAVEATS[code]}")
    return data


def value_provenance(points: Frame, column: str) -> Counter:
    """How many plotted values of ``column`` came from each source.

    Rows read from a real index.csv carry their values as such; values the
    embedded catalog took from published facts name that source in ``value_sources``.
    """
    from vitzoo.catalog.schema import value_sources_of

    counts: Counter = Counter()
    for row in points.select(
            [c for c in ("row_source", "value_sources", column) if c in points.column_names]
    ).to_pylist():
        if row.get(column) is None:
            continue
        source = value_sources_of(row).get(column)
        counts[source or row.get("row_source") or "unknown"] += 1
    return counts


# --- drawing -------------------------------------------------------------------


def _arch_colours(names: Sequence[str | None]) -> dict[str | None, Any]:
    """A stable colour per architecture (same architecture, same colour, in every plot)."""
    from matplotlib import colormaps

    order = [a for a in ALL_ARCHS if a in names] + sorted({n for n in names if n not in ALL_ARCHS},
                                                          key=str)
    palette = colormaps["tab20"].colors if len(order) > 10 else colormaps["tab10"].colors
    return {name: palette[i % len(palette)] for i, name in enumerate(order)}


_MARKERS = {384: "o", 224: "^"}


def _axis_label(column: str) -> str:
    doc = _DOCS.get(column, "")
    if column in ACCURACY_COLUMNS:  # stored as fractions, ticks drawn as percentages
        doc = doc.replace("(fraction)", "(in %)")
    return f"{column}\n({doc})" if doc else column


def draw_scatter(ax: Axes, data: Scatter, *, title: str | None = None) -> None:
    """Draw ``data`` on ``ax``: log x-axis, colour per architecture, marker per resolution,
    the Pareto front as a black line, architecture labels beside the points."""
    from matplotlib.lines import Line2D

    rows = data.points.select(
        [c for c in ("name", "adapt_resolution", "checkpoint", "collection", data.x, data.y)
         if c in data.points.column_names]).to_pylist()
    caveated = data.caveats
    names = [r.get("name") for r in rows]
    colours = _arch_colours(names)
    groups: dict[tuple, list[dict]] = {}
    for row, codes in zip(rows, caveated, strict=True):
        groups.setdefault((row.get("name"), row.get("adapt_resolution"), bool(codes)), []).append(row)
    for (name, res, hollow), members in sorted(groups.items(), key=lambda kv: (
            list(colours).index(kv[0][0]), kv[0][1] or 0, kv[0][2])):
        style = (dict(facecolors="none", edgecolors=colours[name], linewidths=1.2) if hollow
                 else dict(color=colours[name], edgecolors="none"))
        ax.scatter([m[data.x] for m in members], [m[data.y] for m in members],
                   marker=_MARKERS.get(res, "s"), s=36, alpha=0.8, zorder=2, **style)
    front = data.front.select([c for c in ("name", "checkpoint", "collection", data.x, data.y)
                               if c in data.front.column_names]).to_pylist()
    front_sorted = sorted(front, key=lambda r: r[data.x])
    ax.plot([r[data.x] for r in front_sorted], [r[data.y] for r in front_sorted], "-",
            color="black", linewidth=1.2, zorder=3)
    ax.scatter([r[data.x] for r in front], [r[data.y] for r in front], s=90,
               facecolors="none", edgecolors="black", linewidths=1.3, zorder=4)
    labelled = rows if len(rows) <= LABEL_ALL_MAX else front
    for row in labelled:
        label = row.get("checkpoint") if row.get("collection") == "local" else row.get("name")
        ax.annotate(label or "?", (row[data.x], row[data.y]), xytext=(4, 4),
                    textcoords="offset points", fontsize=8, zorder=5)
    ax.set_xscale("log")
    ax.set_xlabel(_axis_label(data.x))
    ax.set_ylabel(_axis_label(data.y))
    if data.y in ACCURACY_COLUMNS:
        percent_axis(ax.yaxis)
    if data.x in ACCURACY_COLUMNS:
        percent_axis(ax.xaxis)
    ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], linestyle="", marker="o", color=colour, label=name or "?")
               for name, colour in colours.items()]
    handles.append(Line2D([], [], color="black", marker="o", markerfacecolor="none",
                          label=f"Pareto front ({data.front.num_rows})"))
    resolutions = sorted({r.get("adapt_resolution") for r in rows} - {None})
    handles += [Line2D([], [], linestyle="", marker=_MARKERS.get(res, "s"), color="dimgray",
                       label=f"{res} px") for res in resolutions]
    codes = list(dict.fromkeys(code for point in caveated for code in point))
    if codes:  # the README's marker convention: hollow = a value to read with care
        handles.append(Line2D([], [], linestyle="", marker="o", color="dimgray",
                              markerfacecolor="none", label=f"hollow: caveat {', '.join(codes)}"))
    ax.legend(handles=handles, fontsize=8, loc="best", framealpha=0.8)
    ax.set_title(title or f"{data.y} vs {data.x}", fontsize=11)


def parse_size(size: str) -> tuple[int, int]:
    """``"1000x700"`` -> (1000, 700) pixels, with a clear error for anything else."""
    try:
        width, height = (int(part) for part in size.lower().split("x"))
    except ValueError:
        raise VitzooError(f"--size expects WIDTHxHEIGHT in pixels, got {size!r}",
                          "e.g. --size 1000x700") from None
    if not (100 <= width <= 10000 and 100 <= height <= 10000):
        raise VitzooError(f"--size {size} is out of range", "use 100 to 10000 pixels per side")
    return width, height


def _format_for(out: Path) -> str:
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise VitzooError(f"cannot write {out.name}: unknown image format {out.suffix or '(none)'}",
                          f"end the file name with {' or '.join(FORMATS)}")
    return fmt


def new_figure(size: tuple[int, int]) -> Figure:
    """A standalone figure on the Agg canvas, ``size`` in pixels (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def write_figure(fig: Figure, out: str | os.PathLike[str]) -> Path:
    """Save ``fig`` to ``out`` atomically (temporary file in the same folder, then rename)."""
    out = Path(out).expanduser()
    fmt = _format_for(out)
    if not out.parent.is_dir():
        raise VitzooError(f"cannot write {out}: folder {out.parent} does not exist",
                          "create it first or choose another --out")
    with atomic_write(out) as handle:
        # No bbox_inches="tight": the file is exactly the requested pixel size.
        fig.savefig(handle, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else None)
    return out


def save_scatter(data: Scatter, out: str | os.PathLike[str], *, size: tuple[int, int] = (1000, 700),
                 title: str | None = None, footnote: str | None = None) -> Path:
    """Render :func:`draw_scatter` to a PNG or SVG file of ``size`` pixels."""
    fig = new_figure(size)
    ax = fig.add_subplot()
    draw_scatter(ax, data, title=title)
    if footnote:
        fig.text(0.01, 0.01, footnote, fontsize=7, color="dimgray", ha="left", va="bottom")
    fig.subplots_adjust(left=0.12, right=0.97, top=0.93, bottom=0.16)
    return write_figure(fig, out)


# --- a fine-tuning run ---------------------------------------------------------

#: What ``vitzoo finetune`` logs per step in ``metrics.jsonl`` and what plot-run draws.
RUN_SERIES = ("train_loss", "eval_loss", "eval_accuracy", "lr", "img_per_sec")


@dataclass
class RunCurves:
    """The curves of one run: ``series[name] = (steps, values)``, steps ascending."""

    path: Path
    series: dict[str, tuple[list[int], list[float]]]
    notes: list[str] = field(default_factory=list)


def _number(value: Any, key: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise VitzooError(f"{where}: {key} is {value!r}, not a number",
                          "metrics.jsonl must hold one JSON object of numbers per line")
    return float(value)


def read_run(workdir: str | os.PathLike[str]) -> RunCurves:
    """Read ``WORKDIR/metrics.jsonl`` (one JSON object per logged step).

    A resumed run may log a step twice; the later line wins. An unfinished last
    line (no newline: the run is writing it right now) is skipped with a note;
    any other malformed line is an error naming the line.
    """
    workdir = Path(workdir).expanduser()
    if workdir.is_file():
        raise VitzooError(f"{workdir} is a file, not a run folder",
                          "pass the --workdir of a `vitzoo finetune` run")
    if not workdir.is_dir():
        raise VitzooError(f"run folder {workdir} does not exist",
                          "pass the --workdir of a `vitzoo finetune` run")
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        raise VitzooError(f"no metrics.jsonl in {workdir}",
                          "is this a `vitzoo finetune` workdir? It writes metrics.jsonl at each log step")
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    notes: list[str] = []
    by_step: dict[int, dict[str, float]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # no newline after it: still being written
                notes.append(f"skipped the unfinished last line {number}")
                continue
            raise VitzooError(f"{where} is not valid JSON ({exc.msg})",
                              "the file is damaged; remove that line to plot the rest") from None
        if not isinstance(record, dict) or "step" not in record:
            raise VitzooError(f"{where} is not a metrics record with a 'step'",
                              "metrics.jsonl must hold one JSON object per logged step")
        step = _number(record["step"], "step", where)
        if step is None or step != int(step):
            raise VitzooError(f"{where}: step is {record['step']!r}, not an integer",
                              "metrics.jsonl must hold one JSON object per logged step")
        values = {key: _number(record.get(key), key, where) for key in RUN_SERIES}
        if int(step) in by_step:
            notes.append(f"step {int(step)} is logged twice (a resumed run); the later line is used")
        by_step[int(step)] = {k: v for k, v in values.items() if v is not None}
    if not by_step:
        raise VitzooError(f"{path} is empty", "the run has not logged a step yet; try again later")
    series: dict[str, tuple[list[int], list[float]]] = {}
    for key in RUN_SERIES:
        steps = [s for s in sorted(by_step) if key in by_step[s]]
        series[key] = (steps, [by_step[s][key] for s in steps])
    if not any(series[k][0] for k in ("train_loss", "eval_loss", "eval_accuracy", "lr")):
        raise VitzooError(f"{path} has no train_loss, eval_loss, eval_accuracy or lr values",
                          "is it a `vitzoo finetune` metrics file?")
    return RunCurves(path=path, series=series, notes=notes)


def _draw_series(ax: Axes, curves: RunCurves, keys: Sequence[str], title: str, empty: str) -> None:
    drawn = False
    for key in keys:
        steps, values = curves.series.get(key, ([], []))
        if steps:
            marker = "o" if key.startswith("eval") or len(steps) == 1 else None
            ax.plot(steps, [v if math.isfinite(v) else float("nan") for v in values], "-",
                    label=key, marker=marker, markersize=4)
            drawn = True
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="dimgray")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)


def draw_run(axes: Sequence[Axes], curves: RunCurves) -> None:
    """Loss, accuracy and learning rate against the step, on three axes."""

    loss_ax, acc_ax, lr_ax = axes
    _draw_series(loss_ax, curves, ("train_loss", "eval_loss"), "loss", "no loss logged")
    _draw_series(acc_ax, curves, ("eval_accuracy",), "eval accuracy", "no evaluation logged yet")
    if curves.series["eval_accuracy"][0]:
        percent_axis(acc_ax.yaxis)
        low, high = acc_ax.get_ylim()  # autoscale pads past 100%, which no accuracy reaches
        acc_ax.set_ylim(max(low, 0.0), min(high, 1.0))
    _draw_series(lr_ax, curves, ("lr",), "learning rate", "no learning rate logged")


def save_run(curves: RunCurves, out: str | os.PathLike[str], *,
             size: tuple[int, int] = (1500, 450), title: str | None = None) -> Path:
    """Render :func:`draw_run` to a PNG or SVG file of ``size`` pixels."""
    fig = new_figure(size)
    axes = fig.subplots(1, 3)
    draw_run(axes, curves)
    speeds = curves.series["img_per_sec"][1]
    subtitle = title or str(curves.path.parent)
    if speeds:
        speeds_sorted = sorted(speeds)
        subtitle += f"   (median {speeds_sorted[len(speeds_sorted) // 2]:.1f} img/s)"
    fig.suptitle(subtitle, fontsize=10)
    fig.subplots_adjust(left=0.05, right=0.98, top=0.85, bottom=0.14, wspace=0.25)
    return write_figure(fig, out)
