"""The dataset and runtime options are declared once and mean the same in every command.

The option strings below are written out here (not read from the code under test): each
must appear exactly once as a literal under ``vitzoo/cli/``, every command that reads a
dataset must accept all of them, and the defaults a command gets are the record's.
"""

from __future__ import annotations

import dataclasses

import pytest
import typer
from typer.testing import CliRunner

from tests.support import REPO_ROOT
from vitzoo.cli import app
from vitzoo.cli.data_options import data_options, runtime_options
from vitzoo.data.options import DataOptions

DATA_OPTION_STRINGS = ("--dataset", "--train-split", "--eval-split", "--split", "--data-dir",
                       "--manual-dir", "--val-fraction", "--stream", "--gcs-auth")
RUNTIME_OPTION_STRINGS = ("--compile-cache/--no-compile-cache",)
DATA_COMMANDS = (["finetune"], ["evaluate"], ["probe"], ["recommend"])


def _cli_sources() -> str:
    return "\n".join(p.read_text() for p in sorted((REPO_ROOT / "vitzoo" / "cli").rglob("*.py")))


@pytest.mark.parametrize("option", [*DATA_OPTION_STRINGS, *RUNTIME_OPTION_STRINGS, "--data"])
def test_each_dataset_and_runtime_option_is_declared_once(option):
    assert _cli_sources().count(f'"{option}"') == 1, option


@pytest.mark.parametrize("command", DATA_COMMANDS, ids=lambda c: c[0])
def test_every_command_that_reads_a_dataset_takes_every_dataset_option(command):
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    expected = set(DATA_OPTION_STRINGS) - ({"--train-split"} if command == ["evaluate"] else set())
    for option in [*expected, "--compile-cache", "--no-compile-cache"]:
        assert option in result.output, (command, option)
    assert "--data " not in result.output  # the old spelling is accepted but not shown


def _captured(**decorator: object) -> tuple[typer.Typer, list]:
    seen: list = []
    probe_app = typer.Typer()

    @probe_app.command()
    @runtime_options
    @data_options(**decorator)
    def show(data: DataOptions, name: str = typer.Option("x", "--name")) -> None:
        from vitzoo import runtime

        seen.append((data, name, runtime.compile_cache_wanted()))

    return probe_app, seen


def test_the_generated_options_hand_the_command_one_record():
    probe_app, seen = _captured()
    result = CliRunner().invoke(probe_app, ["--dataset", "gs://b/photos", "--split", "val",
                                            "--val-fraction", "0.25", "--gcs-auth", "--stream",
                                            "--no-compile-cache", "--name", "y"])
    assert result.exit_code == 0, result.output
    assert seen == [(DataOptions(dataset="gs://b/photos", eval_split="val", val_fraction=0.25,
                                 stream=True, gcs_auth=True), "y", False)]
    result = CliRunner().invoke(probe_app, ["--dataset", "d"])
    assert result.exit_code == 0, result.output
    # the defaults are the record's own: 0.1, no streaming, anonymous reads, cache on
    assert seen[-1] == (DataOptions(dataset="d", val_fraction=0.1), "x", True)
    assert CliRunner().invoke(probe_app, []).exit_code != 0  # --dataset is required


def test_without_the_flag_the_environment_decides_the_compile_cache(monkeypatch):
    probe_app, seen = _captured()
    monkeypatch.setenv("VITZOO_COMPILE_CACHE", "0")
    for args, wanted in (([], False), (["--compile-cache"], True), (["--no-compile-cache"], False)):
        result = CliRunner().invoke(probe_app, ["--dataset", "d", *args])
        assert result.exit_code == 0, result.output
        assert seen[-1][2] is wanted, args
    monkeypatch.setenv("VITZOO_COMPILE_CACHE", "1")
    CliRunner().invoke(probe_app, ["--dataset", "d"])
    assert seen[-1][2] is True


def test_an_optional_dataset_takes_the_old_spelling_and_may_be_absent():
    probe_app, seen = _captured(required=False)
    assert CliRunner().invoke(probe_app, []).exit_code == 0
    assert CliRunner().invoke(probe_app, ["--data", "pets"]).exit_code == 0
    assert [s[0] for s in seen] == [None, DataOptions(dataset="pets")]


def test_finetune_options_are_data_options_with_the_same_defaults():
    from vitzoo.adapt.options import FinetuneOptions

    options = FinetuneOptions(model="B/16", dataset="pets", gcs_auth=True, eval_split="val")
    assert isinstance(options, DataOptions)
    assert options.data_options() == DataOptions(dataset="pets", gcs_auth=True, eval_split="val")
    ours = {f.name: f.default for f in dataclasses.fields(DataOptions)}
    theirs = {f.name: f.default for f in dataclasses.fields(FinetuneOptions) if f.name in ours}
    assert theirs == ours
