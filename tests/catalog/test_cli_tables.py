"""Tables at 80 and 200 columns, real column names as headers, timm/HF names, availability.

Each table is rendered by the real entry point with ``COLUMNS`` set, as a terminal of
that width would; a "row line" is a line of the table body.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.support import REPO_ROOT
from tests.support.cli_helpers import run_cli as run
from tests.support.cli_helpers import table_at
from vitzoo.catalog.api import find_checkpoint
from vitzoo.cli.render import CAVEAT_MARKS, ELLIPSIS, elide_middle, fit_columns, header_lines
from vitzoo.runs.registry import register_run

B16 = "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"
#: The other families' files (index/sources/timm_families.csv, read with the csv module).
FAMILIES = {r["timm_name"] for r in csv.DictReader(
    (REPO_ROOT / "index" / "sources" / "timm_families.csv").read_text().splitlines()[1:])}


def header_names(header: list[str]) -> list[str]:
    """Column names from (possibly two-line) headers: a name split at '_' is joined again."""
    words = [line.split() for line in header]
    if len(words) == 1:
        return words[0]
    top, bottom = header[0], header[1]
    names = []
    for word in bottom.split():
        start = bottom.index(word)
        above = top[start:start + len(word) + 20].split()
        joined = above[0] + word if above and above[0].endswith("_") and top[start:].startswith(above[0]) \
            else word
        names.append(joined)
    return names


def json_rows(capsys, *args: str) -> list[dict]:
    code, out, err = run(capsys, *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("width", [80, 200])
def test_list_one_line_per_row_name_first(capsys, monkeypatch, width):
    header, body, out = table_at(capsys, monkeypatch, width, "list", "--arch", "S/16", "--ds",
                                 "i21k", "--limit", "5")
    assert len(body) == 5 and "5 rows" in out
    assert header[-1].split()[0] == "checkpoint"
    names = [r["checkpoint"] for r in json_rows(capsys, "list", "--arch", "S/16", "--ds", "i21k",
                                                 "--limit", "5")]
    for line, name in zip(body, names, strict=True):
        shown = line.split()[0].rstrip("".join(CAVEAT_MARKS.values()))  # footnote marks
        if width == 200:
            assert shown == name  # whole names when there is room
        else:  # shortened in the middle: its start and its end are the real name's
            head, tail = shown.split(ELLIPSIS)
            assert name.startswith(head) and name.endswith(tail) and len(shown) >= 40
    if width == 80:
        assert "--wide" in out and "not shown:" in out


@pytest.mark.parametrize("width", [80, 200])
def test_pretrained_list_fits_and_shows_whole_names(capsys, monkeypatch, width):
    _, body, out = table_at(capsys, monkeypatch, width, "list", "--arch", "B/16", "--aug",
                                 "medium1", "--pretrained")
    assert len(body) == 12 and "12 rows" in out and "nan" not in out.lower().split()
    shown = {line.split()[0] for line in body}
    assert B16 in shown and all(n.startswith("B_16-") for n in shown)  # 57 characters fit at 80
    if width == 200:
        assert " ? " in out  # final_val unknown, printed as ?


@pytest.mark.parametrize("width", [80, 200])
def test_recommend_fits_with_numbers_whole(capsys, monkeypatch, width):
    header, body, out = table_at(capsys, monkeypatch, width, "recommend")
    assert len(body) == 10 and "10 rows" in out
    assert header[-1].split()[0] == "checkpoint"
    rows = json_rows(capsys, "recommend")
    tests = [f"{100 * r['adapt_final_test']:.2f}%" for r in rows]  # fractions read as percentages
    assert all(t in line.split() for t, line in zip(tests, body, strict=True))  # never "83.…"


@pytest.mark.parametrize("width", [80, 200])
def test_local_list_shows_the_run_name(capsys, monkeypatch, tmp_path, width):
    npz = tmp_path / "final.npz"
    npz.write_bytes(b"PK\x03\x04")
    register_run("pets-b16-a-rather-long-run-name", npz, {
        "name": "B/16", "adapt_ds": "oxford_iiit_pet", "adapt_resolution": 224,
        "adapt_final_val": 0.95, "adapt_final_test": 0.91, "filename": B16})
    _, body, out = table_at(capsys, monkeypatch, width, "list", "--local")
    assert [line.split()[0] for line in body] == ["pets-b16-a-rather-long-run-name"]
    assert "1 row" in out and "1 rows" not in out
    assert "local" in body[0].split()  # available: the run's own file exists


@pytest.mark.parametrize("width", [80, 200])
def test_empty_local_list_says_how_to_register_and_claims_nothing_hidden(capsys, monkeypatch, width):
    header, body, out = table_at(capsys, monkeypatch, width, "list", "--local")
    assert body == [] and header_names(header)[0] == "checkpoint" and "0 rows" in out
    assert "unknown in every row" not in out and "not shown" not in out
    assert "no registered runs yet: `vitzoo finetune ... --workdir DIR` registers one" in out


@pytest.mark.parametrize("width", [80, 200])
def test_show_fits(capsys, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    code, out, err = run(capsys, "show", "R26+S/32")
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= width
    assert "patch 1," not in out and "1x1 patches" in out
    details = json_rows(capsys, "show", "R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0"
                                    "--oxford_iiit_pet-steps_0k-lr_0.003-res_224")
    params = {f["field"]: f for f in details["fields"]}["params"]
    # the architecture's 36,431,912 at 224 px with 1000 classes, the head cut to Pets' 37
    assert params["value"] == 36_431_912 - (1000 - 37) * (384 + 1)
    assert params["source"].startswith("computed:")


L16_384 = ("L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-"
           "lr_0.01-res_384")


@pytest.mark.parametrize("width", [80, 200])
def test_show_prints_published_accuracies_as_percent_at_their_resolution(capsys, monkeypatch, width):
    """Fractions in the data, percentages on screen, and the 224 px Table 3 figure of a 384 px
    fine-tune's pre-training says 224 px."""
    monkeypatch.setenv("COLUMNS", str(width))
    code, out, err = run(capsys, "show", L16_384)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= width
    facts = [line.split() for line in out.splitlines()
             if line.startswith(("imagenet_top1 ", "adapt_final_test ", "checkpoint_size_mib "))]
    assert ["imagenet_top1", "83.98%", "224", "px"] in [f[:4] for f in facts]
    assert ["imagenet_top1", "85.59%", "384", "px"] in [f[:4] for f in facts]
    assert ["adapt_final_test", "85.588%", "384", "px"] in [f[:4] for f in facts]
    assert ["checkpoint_size_mib", "1,243", "MiB", "[1]"] in facts  # no resolution for a size
    details = json_rows(capsys, "show", L16_384)
    top1 = [f for f in details["published"] if f["metric"] == "imagenet_top1"]
    assert {(f["value"], f["resolution"], f["published_as"]) for f in top1} == {
        (0.8398, 224, "83.98%"), (0.8559, 384, "85.59%")}  # JSON keeps the fractions
    assert any(c.startswith("res224_figure: ") for c in details["caveats"])
    assert "caveats" not in {f["field"] for f in details["fields"]}


def test_percent_keeps_the_stored_digits():
    from vitzoo.cli.render import percent

    assert [percent(v) for v in (0.8396, 0.85588, 1, 0.83, 0.0001, 0.967391)] == [
        "83.96%", "85.588%", "100%", "83%", "0.01%", "96.7391%"]


def test_headers_are_the_column_names_sort_and_columns_accept(capsys, monkeypatch):
    header, _, _ = table_at(capsys, monkeypatch, 300, "list", "--arch", "R26+S/32", "--adapt-ds",
                            "oxford_iiit_pet", "--where", "notnull(adapt_final_val)", "--limit", "2")
    names = header_names(header)
    assert names[:2] == ["checkpoint", "name"] and "adapt_final_val" in names
    assert "infer_samples_per_sec" in names and "available" in names
    rows = json_rows(capsys, "list", "--arch", "B/8", "--limit", "2", "--columns", ",".join(names),
                     "--sort", names[-2])
    assert list(rows[0]) == names


@pytest.mark.parametrize("args", [
    ("recommend",), ("recommend", "--pareto"), ("recommend", "--adapt-ds", "oxford_iiit_pet"),
    ("list", "--pretrained", "--arch", "B/16", "--limit", "3"),
])
def test_every_header_is_a_column_of_the_machine_output(capsys, monkeypatch, args):
    header, body, _ = table_at(capsys, monkeypatch, 300, *args)
    names = header_names(header)
    assert body and names[0] == "checkpoint"
    rows = json_rows(capsys, *args)
    assert set(names) <= set(rows[0]), set(names) - set(rows[0])
    if args[0] == "list":  # and every header is a name --sort and --columns take
        for name in names:
            sorted_rows = json_rows(capsys, *args, "--sort", name, "--columns", name)
            assert list(sorted_rows[0]) == [name]


def test_fit_columns_drops_low_value_columns_before_shortening_the_name():
    names = ["checkpoint", "sd", "adapt_final_val"]
    rows = [["x" * 60, "0.1", "0.9000"]]
    wide = fit_columns(names, rows, 200)
    assert wide.columns == names and wide.name_width is None
    narrow = fit_columns(names, rows, 72)  # the whole name fits once sd is dropped
    assert narrow.columns == ["checkpoint", "adapt_final_val"] and narrow.hidden == ["sd"]
    assert narrow.name_width is None
    tight = fit_columns(names, rows, 60)
    assert tight.columns == ["checkpoint", "adapt_final_val"] and tight.name_width == 60 - 11
    assert elide_middle("abcdefghij", 5) == "ab" + ELLIPSIS + "ij"
    assert header_lines("adapt_final_test", 6) == "adapt_\nfinal_test"
    assert header_lines("name", 4) == "name"


def test_wide_keeps_every_column_and_whole_names(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "list", "--arch", "S/16", "--limit", "1", "--wide")
    assert code == 0
    assert "S_16-i1k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--" in out
    assert "not shown" not in out and ELLIPSIS not in out


# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "filename", "kind"), [
    ("timm/vit_base_patch16_224.augreg_in21k_ft_in1k",
     B16 + "--imagenet2012-steps_20k-lr_0.01-res_224", "finetuned"),
    ("hf-hub:timm/vit_base_patch16_384.augreg_in21k_ft_in1k",
     B16 + "--imagenet2012-steps_20k-lr_0.01-res_384", "finetuned"),
    ("vit_base_patch16_224.augreg_in21k", B16, "pretrained"),
    ("vit_base_patch16_224", B16, "pretrained"),  # an architecture: its recommended checkpoint
    ("vit_small_r26_s32_224", "R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0",
     "pretrained"),
])
def test_timm_and_hub_names_resolve(name, filename, kind):
    info = find_checkpoint(name)
    assert (info.filename, info.kind) == (filename, kind)


def test_timm_names_work_as_filters(capsys):
    assert {r["name"] for r in json_rows(capsys, "list", "--arch", "vit_base_patch16_224",
                                         "--limit", "50")} == {"B/16"}
    rows = json_rows(capsys, "list", "--name", "*augreg_in21k_ft_in1k*", "--columns",
                     "checkpoint,name,hf_repo")
    assert len(rows) == 19 and all(r["hf_repo"].endswith(".augreg_in21k_ft_in1k") for r in rows)
    rows = json_rows(capsys, "list", "--name", "vit_base_patch16*", "--pretrained")
    assert B16 in [r["checkpoint"] for r in rows]  # and those with an in1k fine-tune on the Hub
    google = [r for r in rows if not r["checkpoint"].startswith("vit_base_patch16")]
    assert all(r["checkpoint"].startswith("B_16-") for r in google) and len(google) == 2
    # the other families' files are named by their timm names, so the glob finds them too
    assert {r["checkpoint"] for r in rows} - {r["checkpoint"] for r in google} >= {
        "vit_base_patch16_224.mae", "vit_base_patch16_224.dino", "vit_base_patch16_clip_224.openai"}
    rows = json_rows(capsys, "list", "--ds", "augreg_in21k", "--arch", "Ti/16", "--pretrained")
    assert {r["ds"] for r in rows} == {"i21k"}
    rows = json_rows(capsys, "list", "--name", "medium2-wd_0.03-do_0.1", "--arch", "B/32",
                     "--pretrained")
    assert [r["checkpoint"] for r in rows] == [
        "B_32-i1k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.1-sd_0.1",
        "B_32-i21k-300ep-lr_0.001-aug_medium2-wd_0.03-do_0.1-sd_0.1",
        "B_32-i21k-30ep-lr_0.001-aug_medium2-wd_0.03-do_0.1-sd_0.1"]


def test_collections_by_folder_and_family(capsys):
    rows = json_rows(capsys, "list", "--collection", "imagenet21k", "--pretrained")
    assert rows and all(r["checkpoint"].startswith("imagenet21k/") for r in rows)
    assert "imagenet21k/ViT-B_16" in {r["checkpoint"] for r in rows}
    mixers = json_rows(capsys, "list", "--collection", "mixer", "--columns", "checkpoint,collection")
    assert len(mixers) == 6 and {r["collection"].split("/")[0] for r in mixers} == {"mixer"}


# --- availability ----------------------------------------------------------------------------


def test_available_is_derived_offline_from_cache_and_hub_copies(capsys, monkeypatch):
    from vitzoo.config import cache_dir

    cached = cache_dir() / "augreg" / f"{B16}--cifar100-steps_2k-lr_0.01-res_224.npz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04")
    rows = json_rows(capsys, "list", "--downloadable", "--columns", "checkpoint,available")
    assert rows == [{"checkpoint": cached.stem, "available": "cache"}]  # HF_HUB_OFFLINE is set
    monkeypatch.delenv("HF_HUB_OFFLINE")
    rows = json_rows(capsys, "list", "--downloadable", "--columns", "checkpoint,hf_repo,available")
    families = [r for r in rows if r["checkpoint"] in FAMILIES]  # their Hub repo is the file's
    assert len(rows) - len(families) == 26 and len(families) == len(FAMILIES)
    assert {r["available"] for r in rows if r["hf_repo"]} == {"hf"}
    assert {r["available"] for r in families} == {"hf"} and not any(r["hf_repo"] for r in families)
    tuned = json_rows(capsys, "list", "--name", "timm/vit_base_patch16_224.augreg_in21k_ft_in1k",
                      "--columns", "available")
    assert tuned == [{"available": "hf"}]
    unknown = json_rows(capsys, "list", "--arch", "L/16", "--limit", "1", "--columns", "available")
    assert unknown == [{"available": "unknown"}]


def _hub_download_layout(repo: str, files: dict[str, bytes], missing: tuple[str, ...] = ()) -> None:
    """A repo in the Hugging Face cache as ``hf_hub_download`` leaves it (huggingface_hub's
    documented layout): blobs named by etag, the snapshot's files linking to them, ``refs/main``
    naming the commit, and ``.no_exist`` for files the Hub said it does not have."""
    import hashlib
    import os

    from vitzoo.download.hub import hub_cache_dir

    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = hub_cache_dir() / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (folder / "blobs").mkdir()
    for name, content in files.items():
        etag = hashlib.sha256(content).hexdigest()
        (folder / "blobs" / etag).write_bytes(content)
        os.symlink(Path("..", "..", "blobs", etag), snapshot / name)
    for name in missing:
        (folder / ".no_exist" / commit).mkdir(parents=True, exist_ok=True)
        (folder / ".no_exist" / commit / name).touch()
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)


def test_offline_rows_whose_weights_are_in_the_hub_cache_are_available(capsys, monkeypatch):
    """HF_HUB_OFFLINE is set (as in every test): a row whose Hub weights are in the local cache
    says hf-cache, which the hub client serves offline; a repo with only its config cached, or
    whose weights the Hub said it lacks, stays unknown, as does every other row."""
    import huggingface_hub

    from vitzoo.download.hub import hub_cache_dir

    tuned = "timm/vit_base_patch16_224.augreg_in21k_ft_in1k"
    config_only = "timm/vit_small_patch16_224.augreg_in21k_ft_in1k"
    lacking = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    _hub_download_layout(tuned, {"model.safetensors": b"weights", "config.json": b"{}"})
    _hub_download_layout(config_only, {"config.json": b"{}"})
    _hub_download_layout(lacking, {"config.json": b"{}"}, missing=("model.safetensors",))
    scanned = huggingface_hub.scan_cache_dir(hub_cache_dir())  # the hub client reads our layout
    found = {r.repo_id: {f.file_name for rev in r.revisions for f in rev.files}
             for r in scanned.repos}
    assert found == {tuned: {"model.safetensors", "config.json"}, config_only: {"config.json"},
                     lacking: {"config.json"}}

    for name, expected in ((tuned, "hf-cache"), (config_only, "unknown"), (lacking, "unknown")):
        rows = json_rows(capsys, "list", "--name", name, "--columns", "available")
        assert rows == [{"available": expected}], name
    rows = json_rows(capsys, "list", "--downloadable", "--columns", "checkpoint,hf_repo,available")
    assert [(r["hf_repo"], r["available"]) for r in rows] == [(tuned, "hf-cache")]
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online the Hub serves it: no need to look
    rows = json_rows(capsys, "list", "--name", tuned, "--columns", "available")
    assert rows == [{"available": "hf"}]


def test_show_names_the_nearest_checkpoint_with_a_copy(capsys, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    details = json_rows(capsys, "show", "L/16")
    nearest = [c for c in details["caveats"] if "nearest checkpoint with one" in c]
    assert nearest and "L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1" in nearest[0]


# --- recommend -----------------------------------------------------------------------------


def test_pareto_is_per_dataset(capsys):
    rows = json_rows(capsys, "recommend", "--pareto", "--res", "384")
    by_ds: dict[str, list[dict]] = {}
    for row in rows:
        by_ds.setdefault(row["adapt_ds"], []).append(row)
    assert set(by_ds) == {"imagenet2012", "oxford_iiit_pet"}
    for front in by_ds.values():
        speeds = [r["infer_samples_per_sec"] for r in front]
        accs = [r["adapt_final_test"] for r in front]
        assert speeds == sorted(speeds, reverse=True) and accs == sorted(accs)
    assert max(r["adapt_final_test"] for r in by_ds["imagenet2012"]) < 0.9  # no Pets on it


# --- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["list"], ["show"], ["recommend"], ["plot"], ["download"],
                                     ["cache", "clear"], ["index", "build"], ["predict"],
                                     ["finetune"], ["doctor"]])
def test_help_is_clean_and_h_works(capsys, command):
    code, out, _ = run(capsys, *command, "-h")
    assert code == 0 and out.startswith("Usage: ")
    assert "\\[" not in out
    if command[0] in ("list", "show", "recommend"):
        assert "--format <table|csv|json|jsonl>" in out


def test_download_without_a_copy_names_the_nearest_one_and_no_option_it_cannot_use(
        capsys, monkeypatch):
    from tests.support.gcs_emulator import closed_port_url

    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", closed_port_url())
    monkeypatch.delenv("HF_HUB_OFFLINE")  # L/16's pick has no Hub copy: nothing is asked of it
    code, _, err = run(capsys, "download", "L/16", "--no-progress")
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: could not fetch L_16-i21k-300ep-lr_0.001-aug_strong1-")
    assert "--source hf" not in last
    assert last.endswith("the nearest checkpoint with a copy elsewhere is "
                         "L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1.")
