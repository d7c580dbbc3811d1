"""Choose by your own data: probe checkpoints with frozen features, no fine-tuning.

``probe`` is "adapt without training": it reuses the download chain, the models, the data
pipelines and the multi-device layout of ``finetune``, extracts each candidate's pre-logit
features once into a cache under ``VITZOO_HOME`` (:mod:`.cache`, :mod:`.features`), and
scores them with the ViT paper's few-shot regularised least squares, a full-train linear
probe and k-nearest neighbours (:mod:`.scores`). ``recommend --data`` ranks candidates by
those scores (:mod:`.run`); ``finetune --head-only`` turns the linear probe into a new head
on the frozen backbone (:mod:`.head`).

Importing this package is cheap: jax and TensorFlow are imported inside the functions.
"""
