"""The backbone layer: from a checkpoint argument to a model computing on every device.

One path, used by ``evaluate``, ``predict``, ``predict --attention``, the probe's feature
extraction and ``finetune --head-only``::

    settings = start(cluster=...)            # runtime settings (recorded), jax.distributed
    backbone = load("B/16", resolution=384)  # resolve -> load at a resolution, with or
                                             # without the representation layer
    forward = Forward(backbone, batch=64, dtype="bfloat16")   # dtype, devices, batch
    rows = forward(images)                   # this process's slice in, all rows out

* :mod:`~vitzoo.backbone.load`: resolving and loading (:func:`load`, :class:`Backbone`),
  the compute dtype (:data:`COMPUTE_DTYPES`, :func:`compute_dtype`), what the head reads
  (:func:`representation_of`);
* :mod:`~vitzoo.backbone.parallel`: :func:`start`, :class:`Placement` (devices,
  processes, the global batch rounded to the device count), :class:`Forward`;
* :mod:`~vitzoo.backbone.devices`: host values onto the devices as ``pmap`` wants them;
* :mod:`~vitzoo.backbone.distributed`: which processes form the run.

The models return their pre-logits (and attention weights) as outputs
(:mod:`vitzoo.models`), so nothing here looks inside a module.

Importing this package is cheap: jax is imported when something is computed.
"""

from __future__ import annotations

from vitzoo.backbone.load import (
    COMPUTE_DTYPES,
    Backbone,
    check_dtype,
    compute_dtype,
    load,
    representation_of,
)
from vitzoo.backbone.parallel import Forward, Placement, start

__all__ = ["COMPUTE_DTYPES", "Backbone", "Forward", "Placement", "check_dtype", "compute_dtype",
           "load", "representation_of", "start"]
