"""Offline oxford_iiit_pet examples for ``tfds.testing.mock_data`` (tensorflow-datasets 4.9.x).

The mock's default random generator cannot encode oxford_iiit_pet's ``head_bbox``
feature (it draws min > max), so tests supply examples through ``as_dataset_fn``,
the mock's documented hook: real encoded PNG images and labels, with the dataset's real
feature metadata (37 class names) coming from TFDS itself.

TensorFlow and TFDS are imported when the examples are asked for, so a subprocess can
``from tests.support.tfds_mock import pets_examples`` with ``PYTHONPATH`` at the repository root.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np


def pets_examples(num: dict[str, int]):
    """An ``as_dataset_fn`` yielding encoded PNGs when decoding is skipped (as vitzoo asks).

    Split slices (``train[:50%]``, ``test[2:]``) select examples the way TFDS does (its own
    ``ReadInstruction``), so a test can see that a slice reached TFDS.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from PIL import Image

    def as_dataset(self, split, decoders=None, **kwargs):
        instruction = (split if isinstance(split, tfds.core.ReadInstruction)
                       else tfds.core.ReadInstruction.from_spec(str(split)))
        name = instruction.split_name
        count = num.get(name, 6)
        (absolute,) = instruction.to_absolute({name: SimpleNamespace(num_examples=count)})
        rng = np.random.default_rng(len(name))
        skip = bool(decoders) and "image" in decoders

        def gen():
            for i in range(count)[absolute.from_:absolute.to]:
                label = i % 37
                pixels = rng.integers(0, 255, (20 + i % 5, 24, 3), dtype=np.uint8)
                if skip:
                    buf = io.BytesIO()
                    Image.fromarray(pixels).save(buf, format="PNG")
                    image = buf.getvalue()
                else:
                    image = pixels
                yield {"image": image, "label": label, "species": label % 2,
                       "file_name": f"{i}.png".encode(),
                       "segmentation_mask": b"" if skip else np.zeros((2, 2, 1), np.uint8),
                       "head_bbox": np.array([0.1, 0.1, 0.5, 0.5], np.float32)}

        image_sig = (tf.TensorSpec((), tf.string) if skip
                     else tf.TensorSpec((None, None, 3), tf.uint8))
        mask_sig = (tf.TensorSpec((), tf.string) if skip
                    else tf.TensorSpec((None, None, 1), tf.uint8))
        return tf.data.Dataset.from_generator(gen, output_signature={
            "image": image_sig, "label": tf.TensorSpec((), tf.int64),
            "species": tf.TensorSpec((), tf.int64), "file_name": tf.TensorSpec((), tf.string),
            "segmentation_mask": mask_sig, "head_bbox": tf.TensorSpec((4,), tf.float32)})

    return as_dataset


def finetune_code(checkpoint: str, workdir: str, splits: dict[str, int], *options: str) -> str:
    """Source for ``run_python``: ``vitzoo finetune CHECKPOINT --dataset oxford_iiit_pet`` under
    ``tfds.testing.mock_data`` with ``splits`` examples, no progress bar, not registered."""
    argv = ["finetune", checkpoint, "--dataset", "oxford_iiit_pet", "--workdir", workdir,
            *options, "--no-progress", "--no-register"]
    return f"""
import tensorflow_datasets as tfds
from tests.support.tfds_mock import pets_examples
from vitzoo.cli import main
with tfds.testing.mock_data(as_dataset_fn=pets_examples({splits!r})):
    try:
        main({argv!r})
    except SystemExit as exc:
        assert not exc.code, exc.code
"""
