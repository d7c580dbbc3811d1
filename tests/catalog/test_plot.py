"""``vitzoo plot`` and ``vitzoo plot-run``: the exact rows drawn, valid images, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from tests.support.cli_helpers import run_cli as run
from vitzoo.catalog.api import load_table, run_query
from vitzoo.catalog.frame import Frame
from vitzoo.catalog.query import Filters
from vitzoo.catalog.schema import COLUMN_NAMES
from vitzoo.errors import VitzooError
from vitzoo.plot import read_run, save_run, save_scatter, scatter_data, write_figure

VITZOO = [sys.executable, "-m", "vitzoo"]
IMAGENET_384 = Filters(adapt_ds=["imagenet2012"], res=[384])
#: The published ImageNet results at 384 px (vit_jax README / augreg notebook), by hand:
#: fastest first, each more accurate than every faster one.
PUBLISHED_FRONT = ["R+Ti/16", "S/32", "B/32", "R26+S/32", "R50+L/32"]


def brute_force_front(rows: list[dict], x: str, y: str) -> set[str]:
    """Rows no other row beats on both axes (ties on both count as beaten by the first)."""
    front = set()
    for i, r in enumerate(rows):
        beaten = any(
            (o[x] >= r[x] and o[y] >= r[y]) and (o[x] > r[x] or o[y] > r[y] or j < i)
            for j, o in enumerate(rows) if j != i)
        if not beaten:
            front.add(r["checkpoint"])
    return front


# --- the data behind the scatter ------------------------------------------------


def test_embedded_imagenet_points_are_the_nine_published_results():
    data = scatter_data(load_table(), y="adapt_final_test", filters=IMAGENET_384)
    rows = data.points.to_pylist()
    assert sorted(r["name"] for r in rows) == sorted(
        ["Ti/16", "S/32", "S/16", "B/32", "B/16", "L/16", "R+Ti/16", "R26+S/32", "R50+L/32"])
    assert all(r["adapt_ds"] == "imagenet2012" and r["adapt_resolution"] == 384 for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert by_name["B/16"]["adapt_final_test"] == pytest.approx(0.85486)
    assert by_name["B/16"]["infer_samples_per_sec"] == pytest.approx(137.92)
    assert data.front.column("name") == PUBLISHED_FRONT
    assert data.matched == run_query(load_table(), filters=IMAGENET_384).num_rows
    assert any("test accuracy" in note for note in data.notes)


def test_points_are_exactly_the_list_rows_with_both_values_known():
    """Same filters as `vitzoo list`: R26+S/32's 16 published Pets fine-tunes at both resolutions."""
    filters = Filters(arch=["R26_S_32"], adapt_ds=["oxford_iiit_pet"])
    listed = run_query(load_table(), filters=filters).to_pylist()
    expected = {r["checkpoint"] for r in listed
                if r["adapt_final_val"] is not None and r["infer_samples_per_sec"] is not None}
    assert len(expected) == 16
    data = scatter_data(load_table(), filters=filters)
    assert set(data.points.column("checkpoint")) == expected
    assert data.points.num_rows == 16
    assert set(data.front.column("checkpoint")) == brute_force_front(
        data.points.to_pylist(), "infer_samples_per_sec", "adapt_final_val")


def _fake_frame() -> Frame:
    from tests.support.bucket_factory import fake_index_rows  # TEST DATA: seeded random metrics

    rows = fake_index_rows()
    for row in rows:
        row.update(collection="augreg", checkpoint=row["adapt_filename"], row_source="index.csv")
    return Frame.from_rows(rows, COLUMN_NAMES)


def test_front_over_a_full_fake_index_matches_brute_force():
    frame = _fake_frame()
    filters = Filters(arch=["B/16", "S/16", "Ti/16"], adapt_ds=["cifar100"], res=[224],
                      where="adapt_steps == 10000")
    data = scatter_data(frame, filters=filters)
    expected = [r for r in frame.to_pylist() if r["name"] in ("B/16", "S/16", "Ti/16")
                and r["adapt_ds"] == "cifar100" and r["adapt_resolution"] == 224
                and r["adapt_steps"] == 10000]
    assert len(expected) == 3 * 84 * 4  # archs x (3 datasets x 28 configs) x 4 learning rates
    assert sorted(data.points.column("checkpoint")) == sorted(r["checkpoint"] for r in expected)
    front = data.front.to_pylist()
    assert {r["checkpoint"] for r in front} == brute_force_front(
        expected, "infer_samples_per_sec", "adapt_final_val")
    speeds = [r["infer_samples_per_sec"] for r in front]
    accuracies = [r["adapt_final_val"] for r in front]
    assert speeds == sorted(speeds, reverse=True) and accuracies == sorted(accuracies)


def test_no_point_with_both_values_names_the_columns_that_would_work():
    with pytest.raises(VitzooError) as info:
        scatter_data(load_table(), y="adapt_final_val", filters=IMAGENET_384)
    message = info.value.one_line()
    assert "none of the 1,518 matching rows has both adapt_final_val and infer_samples_per_sec" \
        in message
    assert "--y adapt_final_test (9 points)" in message
    assert "vitzoo index build --source" in message


@pytest.mark.parametrize(("x", "y", "fragment"), [
    ("nope", "adapt_final_val", "unknown column 'nope' for --x"),
    ("infer_samples_per_sec", "aug", "--y aug is not a numeric column"),
])
def test_bad_columns(x, y, fragment):
    with pytest.raises(VitzooError, match=fragment):
        scatter_data(load_table(), x=x, y=y)


def test_drawn_labels_are_the_architectures(tmp_path):
    from vitzoo.plot import draw_scatter, new_figure

    data = scatter_data(load_table(), y="adapt_final_test", filters=IMAGENET_384)
    fig = new_figure((800, 600))
    ax = fig.add_subplot()
    draw_scatter(ax, data)
    assert sorted(t.get_text() for t in ax.texts) == sorted(data.points.column("name"))
    assert ax.get_xscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Pareto front (5)" in legend and "R50+L/32" in legend
    # accuracies are stored as fractions and drawn as percentages: the label says %, not fraction
    assert "(in %)" in ax.get_ylabel() and "fraction" not in ax.get_ylabel()
    assert ax.yaxis.get_major_formatter()(0.855, 0).endswith("%")


# --- files ----------------------------------------------------------------------


def test_cli_png_has_the_requested_size(tmp_path, capsys):
    out = tmp_path / "zoo.png"
    code, stdout, err = run(capsys, "plot", "--y", "adapt_final_test", "--out", str(out),
                            "--size", "800x600")
    assert code == 0, err
    assert stdout.strip() == str(out)
    assert "note: 9 points, 5 on the Pareto front" in err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (800, 600)
        image.verify()
    assert [p.name for p in tmp_path.iterdir()] == ["zoo.png"]  # no temporary file left


def test_cli_svg_parses_and_has_the_requested_size(tmp_path, capsys):
    out = tmp_path / "zoo.svg"
    code, _, err = run(capsys, "plot", "--y", "adapt_final_test", "--out", str(out),
                       "--size", "1000x500", "--arch", "B/16,S/32", "--title", "two models")
    assert code == 0, err
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg")
    assert (root.get("width"), root.get("height")) == ("720pt", "360pt")  # 72 pt per 100 px
    text = out.read_text()
    assert "<!-- two models -->" in text  # matplotlib names each drawn text in a comment
    assert "note: 2 points" in err


def test_cli_filters_are_the_list_filters(capsys, tmp_path):
    code, out, err = run(capsys, "list", "--arch", "R26+S/32", "--adapt-ds", "oxford_iiit_pet",
                         "--where", "notnull(adapt_final_val)", "--format", "json")
    assert code == 0, err
    listed = len(json.loads(out))
    assert listed == 16
    code, _, err = run(capsys, "plot", "--arch", "R26+S/32", "--adapt-ds", "oxford_iiit_pet",
                       "--res", "any", "--out", str(tmp_path / "pets.png"))
    assert code == 0, err
    assert f"note: {listed} points" in err
    assert "adapt_final_val from 16 x repo vit_jax_augreg.ipynb" in err


def test_plot_without_options_draws_the_best_populated_accuracy_and_says_so(tmp_path, capsys):
    code, out, err = run(capsys, "plot", "--out", str(tmp_path / "zoo.png"))
    assert code == 0, err
    assert out.strip() == str(tmp_path / "zoo.png") and (tmp_path / "zoo.png").stat().st_size > 0
    assert "y axis: adapt_final_test, the accuracy column known for the most matching rows (9 " in err
    data = scatter_data(load_table(), filters=IMAGENET_384)
    assert data.y == "adapt_final_test" and data.points.num_rows == 9


def test_cli_error_is_one_line_without_traceback(tmp_path):
    result = subprocess.run([*VITZOO, "plot", "--y", "adapt_final_val", "--out",
                             str(tmp_path / "x.png")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: none of the")
    assert "--y adapt_final_test" in lines[0]
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(("args", "fragment"), [
    (["--out", "zoo.jpg"], "unknown image format .jpg"),
    (["--size", "big"], "--size expects WIDTHxHEIGHT"),
    (["--size", "10x10"], "out of range"),
    (["--arch", "Q/99"], "Q/99"),
    (["--res", "abc"], "--res expects a number"),
])
def test_cli_bad_options(capsys, tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "plot", "--y", "adapt_final_test", *args)
    assert code == 2
    assert fragment in err and err.startswith("error: ")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path):
    from vitzoo.plot import new_figure

    out = tmp_path / "zoo.png"
    out.write_bytes(b"previous")
    fig = new_figure((200, 200))

    def broken_savefig(handle, **kwargs):
        handle.write(b"half an image")
        raise RuntimeError("disk full")

    fig.savefig = broken_savefig
    with pytest.raises(RuntimeError):
        write_figure(fig, out)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["zoo.png"]


def test_save_scatter_png_size(tmp_path):
    data = scatter_data(load_table(), y="adapt_final_test", filters=IMAGENET_384)
    path = save_scatter(data, tmp_path / "s.png", size=(640, 480), footnote="note")
    with Image.open(path) as image:
        assert image.size == (640, 480)


# --- plot-run ---------------------------------------------------------------------


def write_metrics(workdir: Path, records: list, tail: str = "") -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (workdir / "metrics.jsonl").write_text("".join(f"{line}\n" for line in lines) + tail)
    return workdir


RUN = [
    {"step": 1, "train_loss": 2.5, "lr": 0.001, "img_per_sec": 10.0},
    {"step": 2, "train_loss": 2.0, "lr": 0.002, "img_per_sec": 12.0},
    {"step": 2, "train_loss": 1.9, "lr": 0.002, "img_per_sec": 11.0,  # resumed: logged again
     "eval_accuracy": 0.4, "eval_loss": 1.7},
    {"step": 3, "train_loss": 1.5, "lr": 0.0015, "img_per_sec": 12.5},
    {"step": 4, "train_loss": 1.0, "lr": 0.0005, "img_per_sec": 12.0,
     "eval_accuracy": 0.75, "eval_loss": 0.9},
]


def test_read_run_returns_exactly_the_logged_values(tmp_path):
    curves = read_run(write_metrics(tmp_path / "run", RUN))
    assert curves.series["train_loss"] == ([1, 2, 3, 4], [2.5, 1.9, 1.5, 1.0])
    assert curves.series["lr"] == ([1, 2, 3, 4], [0.001, 0.002, 0.0015, 0.0005])
    assert curves.series["eval_accuracy"] == ([2, 4], [0.4, 0.75])
    assert curves.series["eval_loss"] == ([2, 4], [1.7, 0.9])
    assert any("step 2 is logged twice" in n for n in curves.notes)


def test_unfinished_last_line_is_skipped(tmp_path):
    curves = read_run(write_metrics(tmp_path / "run", RUN[:2], tail='{"step": 3, "train_lo'))
    assert curves.series["train_loss"][0] == [1, 2]
    assert curves.notes == ["skipped the unfinished last line 3"]


def test_cli_plot_run_default_output_and_size(tmp_path, capsys):
    workdir = write_metrics(tmp_path / "run", RUN)
    code, out, err = run(capsys, "plot-run", str(workdir), "--size", "900x300")
    assert code == 0, err
    assert out.strip() == str(workdir / "curves.png")
    with Image.open(workdir / "curves.png") as image:
        assert image.format == "PNG" and image.size == (900, 300)
        image.verify()
    svg = save_run(read_run(workdir), tmp_path / "c.svg", size=(1500, 450))
    assert ET.parse(svg).getroot().get("width") == "1080pt"


def test_run_without_evaluation_still_plots(tmp_path):
    workdir = write_metrics(tmp_path / "run", [{"step": 1, "train_loss": 1.0, "lr": 0.1}])
    with Image.open(save_run(read_run(workdir), tmp_path / "c.png", size=(600, 200))) as image:
        assert image.size == (600, 200)


@pytest.mark.parametrize(("setup", "fragment"), [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "no metrics.jsonl in"),
    (lambda d: write_metrics(d, [], tail="\n\n"), "is empty"),
    (lambda d: write_metrics(d, [RUN[0], "{not json", RUN[1]]), "line 2 is not valid JSON"),
    (lambda d: write_metrics(d, [[1, 2]]), "line 1 is not a metrics record"),
    (lambda d: write_metrics(d, [{"train_loss": 1.0}]), "line 1 is not a metrics record"),
    (lambda d: write_metrics(d, [{"step": 1, "train_loss": "high"}]), "train_loss is 'high'"),
    (lambda d: write_metrics(d, [{"step": 1.5, "train_loss": 1.0}]), "not an integer"),
    (lambda d: write_metrics(d, [{"step": 1, "other": 1.0}]), "has no train_loss"),
])
def test_plot_run_errors(tmp_path, capsys, setup, fragment):
    workdir = tmp_path / "run"
    setup(workdir)
    code, out, err = run(capsys, "plot-run", str(workdir))
    assert code == 2 and out == ""
    assert err.startswith("error: ") and fragment in err and len(err.strip().splitlines()) == 1


def test_matplotlib_is_loaded_only_by_the_plot_commands():
    probe = ("import sys\nfrom vitzoo.cli import main\n"
             "try:\n    main(['list', '--arch', 'B/16', '--limit', '1', '--format', 'csv'])\n"
             "except SystemExit as exc:\n    assert not exc.code, f'list failed: {exc.code}'\n"
             "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()  # list really ran: a header and its one row
    assert header.startswith("checkpoint,") and row.startswith("B_16-")
