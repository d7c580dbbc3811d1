"""Every source failing its host-name lookup: the error says the machine looks offline, and its
hint names options only together with the command that has them, whichever command asked."""

from __future__ import annotations

import re

import pytest

from tests.support.cli_helpers import run_cli as run

#: RFC 6761: names under .invalid never resolve, so the lookups fail without any network.
NOWHERE = "http://{}.vitzoo-test.invalid"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("VITZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", NOWHERE.format("storage"))
    monkeypatch.setenv("HF_ENDPOINT", NOWHERE.format("hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("VITZOO_MIRRORS", raising=False)
    return tmp_path


@pytest.mark.parametrize("command", [["download", "Ti/16", "--no-progress"], ["predict", "Ti/16"]])
def test_offline_is_said_and_hints_name_options_with_their_command(capsys, offline, command):
    image = offline / "cat.png"
    image.write_bytes(b"not read: the checkpoint is resolved first")
    args = [*command, str(image)] if command[0] == "predict" else command
    code, _, err = run(capsys, *args)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: this machine looks offline: no host name could be looked up; "
                           "could not fetch Ti_16-i21k-300ep-")
    hint = last.split(")). ", 1)[1]
    for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", hint):
        assert f"`vitzoo download NAME {option}" in hint, (option, hint)
    code, out, _ = run(capsys, "download", "--help")
    assert "--gcs-auth" in out and "--source" in out
