"""``VisionTransformer`` reads its architecture from the ``ModelConfig`` it holds.

The module once mirrored every field of :class:`~vitzoo.models.configs.ModelConfig` and
``build_model`` copied them across one by one; now it holds the config itself. The frozen
fingerprints below were computed with that earlier module (commit 4a31af7, before the
change): for one tiny config per family, the parameter tree (every name and shape, hashed)
and the forward outputs with parameters drawn from NumPy by name (so Flax's initialisers
play no part). A switch that is dropped, renamed or read from the wrong place changes a
fingerprint.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import fields, replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitzoo.errors import VitzooError
from vitzoo.models import build_model
from vitzoo.models.configs import CONFIGS, ModelConfig
from vitzoo.models.vit import VisionTransformer

IMAGE = 32
NUM_CLASSES = 3

_VIT = ModelConfig(name="tiny", family="vit", hidden_size=32, mlp_dim=64, num_layers=2,
                   patch_size=8, num_heads=4)
_HYBRID = replace(_VIT, family="hybrid", resnet_width=32)

#: One tiny config per family the project runs (the switches as the timm families set them).
FAMILY_CONFIGS: dict[str, ModelConfig] = {
    "vit": _VIT,
    "vit_gap_representation": replace(_VIT, classifier="gap", representation_size=24),
    "hybrid_stem_only": replace(_HYBRID, resnet_blocks=(), patch_size=2),
    "hybrid_stages": replace(_HYBRID, resnet_blocks=(1, 2), patch_size=1),
    "deit": replace(_VIT, activation="gelu"),
    "deit_distilled": replace(_VIT, activation="gelu", distilled=True),
    "deit3": replace(_VIT, activation="gelu", no_embed_class=True, layer_scale=True),
    "dinov2_registers": replace(_VIT, activation="gelu", layer_scale=True, num_registers=4,
                                no_embed_class=True),
    "mae_avg": replace(_VIT, activation="gelu", classifier="gap", class_token=True,
                       fc_norm=True),
    "clip_openai": replace(_VIT, activation="quick_gelu", layer_norm_eps=1e-5, norm_pre=True,
                           patch_bias=False),
    "siglip": replace(_VIT, classifier="map"),
    "gap_registers": replace(_VIT, classifier="gap", num_registers=2),
    # a large epsilon, so that each LayerNorm that ignored it would move the outputs clearly
    "eps_fc_norm": replace(_VIT, classifier="gap", fc_norm=True, layer_norm_eps=0.1),
    "eps_map": replace(_VIT, classifier="map", layer_norm_eps=0.1),
}


def _path(keys) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in keys)


def _digits(x) -> list:
    """Seven significant digits, as plain floats (what the reference stores)."""
    return np.vectorize(lambda v: float(f"{v:.7g}"))(np.asarray(x, np.float64)).tolist()


def _fingerprint(config: ModelConfig) -> dict[str, object]:
    """Tree hash and leaf count, and the first outputs, of ``build_model(config, 3)``."""
    model = build_model(config, NUM_CLASSES)
    images = np.random.default_rng(0).uniform(-1, 1, (2, IMAGE, IMAGE, 3)).astype(np.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images))["params"]
    flat = sorted((_path(k), tuple(v.shape)) for k, v in jax.tree_util.tree_leaves_with_path(
        shapes))
    tree = "\n".join(f"{name} {shape}" for name, shape in flat)

    def draw(keys, leaf):  # a value per name, independent of the leaf order and of Flax
        rng = np.random.default_rng(zlib.crc32(_path(keys).encode()))
        return jnp.asarray(rng.normal(0.0, 0.3, leaf.shape).astype(np.float32))

    params = jax.tree_util.tree_map_with_path(draw, shapes)
    logits, out = model.apply({"params": params}, images, outputs=True, attention=True)
    return {
        "tree": hashlib.sha256(tree.encode()).hexdigest()[:16],
        "leaves": len(flat),
        "logits": _digits(logits),
        "pre_logits": _digits(out["pre_logits"][:, :3]),
        "attention": _digits(out["attention"][1, -1, -1, -1, :3]),
        "_tree_text": tree,
    }


#: ``_fingerprint`` of each config, computed with the module before it held its config
#: (commit 4a31af7; the same numbers came out of the new module, and the jaxprs of init and
#: apply, float32 and bfloat16, eval and train with dropout and remat, were identical).
REFERENCE: dict[str, dict[str, object]] = {
    "vit": {
        "tree": "06ed33a9faa44b70", "leaves": 24,
        "logits": [[0.722223, -0.7630106, 0.3754991], [0.6649987, -0.8380191, 0.3945587]],
        "pre_logits": [[-0.00460711, 0.06677543, -0.04007716],
                       [7.406995e-05, 0.3034069, 0.002246611]],
        "attention": [0.05604013, 0.06068975, 0.04184983],
    },
    "vit_gap_representation": {
        "tree": "639da876d669bdc9", "leaves": 25,
        "logits": [[-0.443098, 0.5820597, 1.398803], [-0.5892863, 0.504017, 1.409316]],
        "pre_logits": [[0.5009881, 0.3088473, -0.116247], [0.5663936, 0.449531, 0.1025811]],
        "attention": [0.06864639, 0.04514662, 0.04659667],
    },
    "hybrid_stem_only": {
        "tree": "83e2500bd69e0a38", "leaves": 27,
        "logits": [[0.8281746, -0.6725789, 0.3406855], [0.830557, -0.6753829, 0.3309619]],
        "pre_logits": [[-0.008404731, 0.02452019, -0.05253783],
                       [-0.00874464, 0.0508461, -0.05053991]],
        "attention": [0.03891841, 0.05344205, 0.05224538],
    },
    "hybrid_stages": {
        "tree": "34ba02b9721240ee", "leaves": 60,
        "logits": [[0.7358986, -0.6010623, 0.5116267], [0.7464547, -0.565544, 0.5201102]],
        "pre_logits": [[-0.007302733, 0.03237964, -0.07171112],
                       [-0.006217337, -0.008921016, -0.07574189]],
        "attention": [0.06132288, 0.06267449, 0.04811103],
    },
    "deit": {
        "tree": "06ed33a9faa44b70", "leaves": 24,
        "logits": [[0.7222834, -0.7629943, 0.3755821], [0.6650499, -0.8379791, 0.3946498]],
        "pre_logits": [[-0.004606446, 0.06671994, -0.04006941],
                       [7.522991e-05, 0.3033416, 0.002250232]],
        "attention": [0.05603946, 0.06068971, 0.04185009],
    },
    "deit_distilled": {
        "tree": "60743d469b229b13", "leaves": 27,
        "logits": [[-0.2202511, -0.7485626, 0.186856], [-0.2250139, -0.7912784, 0.2356132]],
        "pre_logits": [[-0.004204582, -0.00533483, -0.05082524],
                       [0.001828654, 0.1878138, -0.01020478]],
        "attention": [0.05264242, 0.04364339, 0.05503976],
    },
    "deit3": {
        "tree": "6e06fad268a87810", "leaves": 26,
        "logits": [[0.3028177, -1.058413, -0.1444374], [0.6497297, -0.9367591, -0.1556027]],
        "pre_logits": [[0.003075642, 0.4638892, 0.1374207],
                       [-0.006216796, -0.3481096, 0.09484138]],
        "attention": [0.06559694, 0.07280821, 0.05620924],
    },
    "dinov2_registers": {
        "tree": "8ca679b7e4d85192", "leaves": 27,
        "logits": [[0.327983, -1.063335, -0.1356975], [0.6105717, -0.9551117, -0.1516151]],
        "pre_logits": [[0.001980702, 0.395109, 0.1269188], [-0.005705482, -0.2823079, 0.09323865]],
        "attention": [0.05279213, 0.05790012, 0.04711116],
    },
    "mae_avg": {
        "tree": "47a9a3bfe316e076", "leaves": 24,
        "logits": [[-1.158564, -0.2442517, 0.6631376], [-1.277545, -0.4695954, 0.4857776]],
        "pre_logits": [[-0.2736129, 0.492218, -0.2930996], [-0.276839, 0.4863945, -0.2285921]],
        "attention": [0.05603946, 0.06068971, 0.04185009],
    },
    "clip_openai": {
        "tree": "7ea672848ebe3b41", "leaves": 25,
        "logits": [[0.8625188, -0.4923154, 0.687368], [0.9083199, -0.4745494, 0.7011831]],
        "pre_logits": [[-0.000944241, -0.2525202, 0.01850019],
                       [-0.002075884, -0.3002318, 0.02374383]],
        "attention": [0.06049338, 0.06079223, 0.05577337],
    },
    "siglip": {
        "tree": "7a685d08484d6b92", "leaves": 38,
        "logits": [[0.7028344, 1.545578, -1.905555], [0.9134842, 2.818206, -1.486681]],
        "pre_logits": [[-1.938507, -0.4572627, 1.193696], [-2.259069, -0.068923, 0.9751398]],
        "attention": [0.06864639, 0.04514662, 0.04659667],
    },
    "gap_registers": {
        "tree": "2fcc85a77cf67589", "leaves": 24,
        "logits": [[0.4860441, -0.7040166, 0.2968258], [0.5576058, -0.5462058, 0.5045123]],
        "pre_logits": [[0.009705107, 0.18196, -0.05653091], [0.008259882, 0.1808168, -0.03162996]],
        "attention": [0.05290984, 0.04555205, 0.0549648],
    },
    "eps_fc_norm": {
        "tree": "b6f90b08af7da250", "leaves": 23,
        "logits": [[-1.172832, -0.2374153, 0.6886959], [-1.265117, -0.4502217, 0.4939108]],
        "pre_logits": [[-0.2907472, 0.4894409, -0.2799842], [-0.2822548, 0.4877991, -0.2189506]],
        "attention": [0.06871584, 0.04524011, 0.04667826],
    },
    "eps_map": {
        "tree": "7a685d08484d6b92", "leaves": 38,
        "logits": [[0.7618587, 1.499162, -1.872037], [0.9584879, 2.734558, -1.44823]],
        "pre_logits": [[-1.935823, -0.5313928, 1.192646], [-2.241243, -0.1512693, 0.9774231]],
        "attention": [0.06871584, 0.04524011, 0.04667826],
    },
}

#: Outputs agree to float32 rounding of a tiny model; the closest two families (vit and deit,
#: tanh against erf GELU) differ several times more (see the test of the tolerance).
RTOL, ATOL = 1e-5, 2e-6
OUTPUTS = ("logits", "pre_logits", "attention")


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_parameter_tree_and_outputs_are_those_of_the_pre_change_module(family):
    got, want = _fingerprint(FAMILY_CONFIGS[family]), REFERENCE[family]
    assert (got["tree"], got["leaves"]) == (want["tree"], want["leaves"]), got["_tree_text"]
    for name in OUTPUTS:
        np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=ATOL, err_msg=name)


def test_the_tolerance_tells_every_two_families_apart():
    """Each fixture differs from every other by more than the tolerance: a switch the module
    stopped reading would make its fixture match the one without it, and fail above."""
    def apart(a, b):
        if (a["tree"], a["leaves"]) != (b["tree"], b["leaves"]):
            return True
        return any(np.any(np.abs(np.subtract(a[n], b[n])) > 3 * (ATOL + RTOL * np.abs(b[n])))
                   for n in OUTPUTS)

    close = [(a, b) for a in REFERENCE for b in REFERENCE
             if a < b and not apart(REFERENCE[a], REFERENCE[b])]
    assert close == []


def test_the_fixtures_set_every_architecture_field():
    """Every field the ViT reads is off its default in some fixture (a new switch needs one)."""
    defaults = ModelConfig(name="", family="vit", hidden_size=1, mlp_dim=1, num_layers=1,
                           patch_size=1)
    wanted = {f.name for f in fields(ModelConfig)} - {
        "name", "tokens_mlp_dim",  # a label, and a Mixer-only width
        "hidden_size", "mlp_dim", "num_layers", "patch_size", "num_heads"}  # sizes: in every one
    varied = {name for cfg in FAMILY_CONFIGS.values() for name in wanted
              if getattr(cfg, name) != getattr(defaults, name)}
    assert wanted <= varied, sorted(wanted - varied)


def test_the_module_holds_the_config_and_stays_hashable():
    """Flax hashes module fields (jit caches on them): the config must be, and equal configs
    must give equal modules."""
    for config in [*FAMILY_CONFIGS.values(),
                   *(c for c in CONFIGS.values() if c.family != "mixer")]:
        model = build_model(config, NUM_CLASSES)
        assert model.config is config
        assert hash(model) == hash(build_model(replace(config), NUM_CLASSES))
        assert model == build_model(replace(config), NUM_CLASSES)
    assert build_model(_VIT, 3) != build_model(replace(_VIT, layer_scale=True), 3)


def test_a_mixer_config_is_refused_in_one_line():
    model = VisionTransformer(config=CONFIGS["Mixer-B/16"], num_classes=NUM_CLASSES)
    with pytest.raises(VitzooError, match=r"MLP-Mixer.*build_model"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, IMAGE, IMAGE, 3)))
