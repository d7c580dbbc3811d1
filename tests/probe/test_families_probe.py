"""One probe over a candidate of every ViT family (local stand-ins in timm's layout) on a
generated image folder: each candidate's features are its family's probe vector, computed by an
independent NumPy forward of timm's model on the pipeline's pixels, its pixels follow its own
``pretrained_cfg``, and its scores equal the NumPy ridge / kNN oracles on those features."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.probe.test_probe_scores import _oracle_choice, _oracle_predict
from tests.support.adapt_helpers import stripes, write_folder
from tests.support.cli_helpers import run_cli
from tests.support.family_standins import STANDINS, write_standins
from tests.support.numpy_models import np_timm_family
from tests.support.timm_family_factory import FAMILIES

#: what each family's probe vector is, in the words the result uses
REPRESENTATION = {"deit": "mean of the class and distillation tokens",
                  "deit3": "class token", "dino": "class token", "dinov2": "class token",
                  "mae": "mean of the patch tokens, then fc_norm",
                  "clip": "class token", "siglip": "attention-pooled (MAP head)"}


def _stripes(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return stripes(60.0 * label, size, rng, color=True)


@pytest.mark.slow
def test_probe_mixes_families_each_with_its_representation_and_preprocessing(
        tmp_path, capsys, monkeypatch):
    from vitzoo.data import Layout, open_dataset
    from vitzoo.download.resolve import resolve_checkpoint
    from vitzoo.probe import scores
    from vitzoo.probe.features import Extractor, load_backbone

    monkeypatch.setenv("VITZOO_HOME", str(tmp_path / "home"))
    data = write_folder(tmp_path / "data", _stripes, ["a", "b", "c"], train=10, test=4, size=44)
    folders = write_standins(tmp_path / "models")
    code, out, err = run_cli(capsys, "probe", "--dataset", str(data), "--candidates",
                             ",".join(str(f) for f in folders.values()), "--shots", "2",
                             "--seeds", "2", "--batch", "8", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    by_path = {c["checkpoint"]: c for c in report["candidates"]}
    assert set(by_path) == {str(f) for f in folders.values()}

    opened = open_dataset(str(data))
    for name, folder in folders.items():
        result = by_path[str(folder)]
        assert result["skipped"] is None, (name, result["skipped"])
        assert result["representation"].startswith(REPRESENTATION[name]), result["representation"]
        pixels = result["preprocessing"]
        assert pixels["mean"] == STANDINS[name][2]["mean"], name
        assert (pixels["crop_pct"], pixels["interpolation"]) == (STANDINS[name][2]["crop_pct"],
                                                                 "bicubic")

        # the probe's features (read back from its cache) are the family's probe vector
        backbone = load_backbone(resolve_checkpoint(str(folder)))
        extractor = Extractor(backbone, batch=8)
        train_x, train_y = extractor.extract(opened.train).load()
        eval_x, eval_y = extractor.extract(opened.eval).load()
        images = np.concatenate([
            batch["image"].reshape(-1, *batch["image"].shape[-3:])[batch["mask"].reshape(-1)]
            for batch in opened.train.eval_batches(backbone.eval_recipe(), Layout(8))])
        spec = FAMILIES[STANDINS[name][0]]
        _, oracle = np_timm_family(load_file(str(folder / "model.safetensors")), images,
                                   num_heads=4, act=spec.act, eps=spec.eps,
                                   global_pool=spec.global_pool,
                                   no_embed_class=spec.no_embed_class)
        np.testing.assert_allclose(train_x, oracle, atol=2e-4, err_msg=name)

        # and its reported linear accuracy is the ridge oracle's on those features
        fit, held = scores.holdout_split(train_y)
        l2 = _oracle_choice(train_x[fit], train_y[fit], train_x[held], train_y[held], 3)
        want = np.mean(_oracle_predict(train_x, train_y, eval_x, l2, 3) == eval_y)
        assert result["linear_accuracy"] == pytest.approx(want, abs=1e-6), name
