"""A mistyped dataset is reported before the checkpoint is downloaded.

``finetune`` without ``--res`` rounds the default resolution to the model's stride, and a
checkpoint named by URL tells its architecture only once fetched: that fetch used to come
before the dataset was opened, so a typo in ``--dataset`` cost a whole download. Here the
checkpoint is a ``gs://`` URL served by the GCS emulator behind a counting gateway; the
oracle is the gateway's request log (empty: nothing was fetched), and a control shows that
the same command with a good dataset does fetch from it.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.support.adapt_helpers import TINY, color_image, write_folder
from tests.support.ckpt_factory import tiny_vit_arrays
from tests.support.cli_helpers import run_cli
from tests.support.gcs_emulator import GatewayServer

BUCKET = "somebodys-models"
URL = f"gs://{BUCKET}/runs/tiny.npz"  # no catalog name, no architecture in it


@pytest.fixture
def gateway(gcs, monkeypatch):
    """The checkpoint in the emulator, every GCS request recorded by the gateway in front."""
    buffer = io.BytesIO()
    np.savez(buffer, **tiny_vit_arrays(num_classes=3, **TINY))
    gcs.create_bucket(BUCKET)
    gcs.upload(BUCKET, "runs/tiny.npz", buffer.getvalue())
    gw = GatewayServer(gcs.url)
    monkeypatch.setenv("VITZOO_GCS_ENDPOINT", gw.url)
    yield gw
    gw.stop()


@pytest.fixture
def good_data(tmp_path):
    return str(write_folder(tmp_path / "data", color_image, ["a", "b", "c"], train=2, test=2,
                            size=16))


MODES = {"one run": [], "head-only": ["--head-only"], "lr sweep": ["--lr", "0.01,0.03"],
         "dry run": ["--dry-run"]}


def test_the_url_checkpoint_is_fetched_to_learn_its_stride(gateway, good_data, capsys,
                                                           monkeypatch, tmp_path):
    """Control: with a good dataset the same command does go to GCS (the run stood in for)."""
    from vitzoo.adapt import runner
    from vitzoo.adapt.autotune import run_config

    assert run_config(URL) is None  # the architecture is not known from the name
    monkeypatch.setattr(runner, "run", lambda options, **_: runner.RunResult(tmp_path, 1, 1, None))
    code, _, err = run_cli(capsys, "finetune", URL, "--dataset", good_data, "--no-progress",
                           "--workdir", str(tmp_path / "w"), "--no-register")
    assert code == 0, err
    assert any("/download/" in r.path for r in gateway.requests), gateway.requests


@pytest.mark.parametrize("mode", MODES)
def test_a_missing_dataset_folder_fails_before_any_download(gateway, capsys, tmp_path, mode):
    missing = str(tmp_path / "no_such_folder")
    code, _, err = run_cli(capsys, "finetune", URL, "--dataset", missing, "--no-progress",
                           "--workdir", str(tmp_path / "w"), "--no-register", *MODES[mode])
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "does not exist" in errors[0] and "no_such_folder" in errors[0], err
    assert gateway.requests == [], "the checkpoint was fetched before the dataset was checked"


def test_an_unknown_tfds_name_fails_before_any_download(gateway, capsys, tmp_path):
    code, _, err = run_cli(capsys, "finetune", URL, "--dataset", "oxford_iiit_pett",
                           "--no-progress", "--workdir", str(tmp_path / "w"), "--no-register")
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unknown TFDS dataset 'oxford_iiit_pett'" in errors[0], err
    assert gateway.requests == []


def test_an_unwritable_workdir_fails_before_any_download(gateway, good_data, capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    code, _, err = run_cli(capsys, "finetune", URL, "--dataset", good_data, "--no-progress",
                           "--workdir", str(blocker / "run"), "--no-register")
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--workdir" in errors[0], err
    assert gateway.requests == []


def test_evaluate_checks_the_dataset_folder_before_any_download(gateway, capsys, tmp_path):
    missing = str(tmp_path / "no_such_folder")
    code, _, err = run_cli(capsys, "evaluate", URL, "--dataset", missing)
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not exist" in errors[0], err
    assert gateway.requests == []


def test_evaluate_checks_a_tfds_name_before_any_download(gateway, capsys):
    code, _, err = run_cli(capsys, "evaluate", URL, "--dataset", "oxford_iiit_pett")
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unknown TFDS dataset 'oxford_iiit_pett'" in errors[0], err
    assert gateway.requests == []
