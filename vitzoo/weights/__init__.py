"""Released checkpoint weights: the ``.npz`` layout and conversions to and from it.

``release`` reads and writes the release layout (never with pickle) and does the
surgery a fine-tune needs (new head, resized position embeddings); ``timm`` converts
between that layout and timm's state dicts.  Training state (optimizer, step, RNG) is a
different thing and lives in :mod:`vitzoo.adapt.train_state`.
"""
