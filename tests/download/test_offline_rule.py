"""One offline rule: every spelling of ``HF_HUB_OFFLINE`` gets the same answer from the catalog's
``available`` column, probe candidate selection and the download resolver, and that answer is
huggingface_hub's own (its ``constants._is_true``: 1/ON/YES/TRUE in any case mean offline).

The oracle is written out by hand from huggingface_hub's documented reading, not derived from
vitzoo's function; ``test_oracle_agrees_with_huggingface_hub`` checks the oracle against the
installed huggingface_hub in a fresh interpreter (its constants are read at import).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

REPO = "timm/vit_tiny_patch16_224.augreg_in21k"
#: (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, offline?) as huggingface_hub reads them.
CASES = [
    (None, None, False), ("1", None, True), ("0", None, False), ("true", None, True),
    ("TRUE", None, True), ("True", None, True), ("yes", None, True), ("On", None, True),
    ("no", None, False), ("false", None, False), ("off", None, False), ("", None, False),
    ("2", None, False), (" 1", None, False), (None, "1", True), ("", "yes", True),
    ("0", "1", False),  # HF_HUB_OFFLINE wins when non-empty, even as "0"
]


def _set(monkeypatch: pytest.MonkeyPatch, hub: str | None, transformers: str | None) -> None:
    for name, value in (("HF_HUB_OFFLINE", hub), ("TRANSFORMERS_OFFLINE", transformers)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def _catalog_says_hf(monkeypatch: pytest.MonkeyPatch) -> bool:
    from vitzoo.catalog.available import availability
    from vitzoo.catalog.frame import Frame

    frame = Frame({"collection": ["augreg"], "url": ["gs://vit_models/augreg/X.npz"],
                   "adapt_url": [None], "adapt_filename": [None], "hf_repo": [REPO],
                   "upstream_hf_repo": [REPO]})
    return "hf" in availability(frame, pretrained=True)[0].split(",")


def _probe_candidate_servable() -> bool:
    from vitzoo.probe.candidates import servable

    (ok,) = servable([{"collection": "augreg", "url": "gs://vit_models/augreg/X.npz",
                       "upstream_hf_repo": REPO}])
    return ok


def _resolver_goes_online(monkeypatch: pytest.MonkeyPatch) -> bool:
    """The download path's hub call: is it allowed to reach the Hub (not local_files_only)?"""
    import huggingface_hub

    from vitzoo import storage
    from vitzoo.download import hub

    seen = {}

    def fake_download(repo_id, filename, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(storage, "preflight", lambda url: None)
    with pytest.raises(Exception, match="stop here"):
        hub.download(REPO, progress=False)
    return not seen["local_files_only"]


@pytest.mark.parametrize(("hub_value", "transformers_value", "offline"), CASES)
def test_every_spelling_gets_one_answer_everywhere(monkeypatch, tmp_path, hub_value,
                                                   transformers_value, offline):
    monkeypatch.setenv("VITZOO_HOME", str(tmp_path))
    monkeypatch.delenv("VITZOO_MIRRORS", raising=False)
    _set(monkeypatch, hub_value, transformers_value)
    online = not offline
    assert _catalog_says_hf(monkeypatch) is online
    assert _probe_candidate_servable() is online
    assert _resolver_goes_online(monkeypatch) is online


def test_oracle_agrees_with_huggingface_hub(monkeypatch):
    """The CASES table is huggingface_hub's reading, checked in fresh interpreters."""
    code = "import huggingface_hub.constants as c, json; print(json.dumps(c.HF_HUB_OFFLINE))"
    import os

    for hub_value, transformers_value, offline in CASES:
        env = {k: v for k, v in os.environ.items()
               if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env.update({k: v for k, v in (("HF_HUB_OFFLINE", hub_value),
                                      ("TRANSFORMERS_OFFLINE", transformers_value)) if v is not None})
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             check=True).stdout
        assert json.loads(out) is offline, (hub_value, transformers_value)
