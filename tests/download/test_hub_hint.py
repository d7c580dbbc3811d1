"""Hints name only options the command has: the Hugging Face source can be reached from any
command that resolves a checkpoint (download, finetune, predict, export...), so its hint names
the command an option belongs to."""

from __future__ import annotations

import re
import sys

import pytest

from tests.support.cli_helpers import run_cli as run
from vitzoo.download import hub
from vitzoo.errors import VitzooError


def test_missing_timm_converter_hint_names_each_option_with_its_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vitzoo.weights.timm", None)  # import fails: ImportError
    with pytest.raises(VitzooError) as caught:
        hub.release_arrays("timm/vit_tiny_patch16_224.augreg_in21k")
    hint = caught.value.hint
    assert "cannot be imported" in caught.value.message and "reinstall vitzoo" in hint
    options = re.findall(r"(?<![\w-])--[a-z][\w-]*", hint)
    assert options == ["--force-reinstall", "--gcs-auth"]
    assert "`vitzoo download NAME --gcs-auth`" in hint  # never a bare option
    code, out, _ = run(capsys, "download", "--help")
    assert code == 0 and "--gcs-auth" in out
