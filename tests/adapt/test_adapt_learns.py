"""It learns: a tiny ViT "pre-trained" on one synthetic task transfers to another.

Upstream task: grayscale stripes in 4 orientations (random period, phase and noise),
trained briefly with Adam and saved in the release layout. Downstream task (an image
folder, through ``vitzoo finetune``): coloured stripes grouped into 3 new classes
(vertical, horizontal, either diagonal; invariant to the random flip of the training
recipe), four training images per class, ten steps. Fine-tuning from the pre-trained
file must reach a test accuracy far above chance (1/3) and above the same fine-tune
started from random weights.
"""

from __future__ import annotations

import json

import pytest

from tests.support.adapt_helpers import TINY, cli, run_python, stripes, tiny_checkpoint, write_folder

pytestmark = pytest.mark.slow

PRETRAIN = r"""
import jax, numpy as np, optax
from tests.support.adapt_helpers import stripes
from vitzoo.adapt.steps import init_state, make_train_step
from vitzoo.weights.release import params_to_release, save_npz
from vitzoo.models import build_model
from vitzoo.models.configs import ModelConfig

config = ModelConfig(name="tiny", family="vit", hidden_size={hidden}, mlp_dim={mlp},
                     num_layers={depth}, patch_size={patch}, num_heads={heads})
model = build_model(config, 4)
rng = np.random.default_rng(0)
angles = [0.0, 45.0, 90.0, 135.0]

def batch(n):
    labels = rng.integers(0, 4, n)
    images = np.stack([stripes(angles[c], 32, rng) for c in labels])
    return {{"image": images.astype(np.float32) / 127.5 - 1.0, "label": labels.astype(np.int32)}}

params = model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32))["params"]
tx = optax.adam(2e-3)
state = init_state(params, tx)
step = make_train_step(model.apply, tx, num_classes=4, pmap=False)
key = np.asarray(jax.random.PRNGKey(0))
for _ in range({steps}):
    state, metrics = step(state, batch(64), key)
print("upstream train accuracy", float(metrics["accuracy"]))
assert float(metrics["accuracy"]) > 0.9
save_npz({path!r}, params_to_release(jax.device_get(state.params), config))
"""


def test_pretrained_checkpoint_transfers_better_than_random(tmp_path):
    pre = tmp_path / "pretrained.npz"
    proc = run_python(PRETRAIN.format(path=str(pre), steps=250, **{
        "hidden": TINY["hidden"], "mlp": TINY["mlp"], "depth": TINY["depth"],
        "patch": TINY["patch"], "heads": TINY["heads"]}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    def downstream(c, size, rng):  # vertical / horizontal / either diagonal: flip-invariant
        angle = [0.0, 90.0, rng.choice([45.0, 135.0])][c]
        return stripes(angle, size, rng, color=True, period=rng.uniform(5.0, 8.0))

    data = write_folder(tmp_path / "task", downstream, ["vertical", "horizontal", "diagonal"],
                        train=4, test=30, size=32, seed=7)
    scratch = tiny_checkpoint(tmp_path / "random.npz", num_classes=4, seed=3)
    results = {}
    for name, ckpt in (("pretrained", pre), ("random", scratch)):
        work = tmp_path / name
        run = cli(["finetune", str(ckpt), "--dataset", str(data), "--workdir", str(work),
                   "--steps", "10", "--warmup", "2", "--lr", "0.03", "--batch", "12",
                   "--res", "32", "--eval-every", "0", "--no-progress", "--no-register"])
        assert run.returncode == 0, run.stderr[-3000:]
        results[name] = json.loads((work / "run.json").read_text())["final_metrics"][
            "eval_accuracy"]
    assert results["pretrained"] >= 0.75, results
    assert results["pretrained"] >= results["random"] + 0.1, results
