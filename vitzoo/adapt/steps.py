"""The pmapped update step (the evaluation step is the evaluators': :mod:`vitzoo.evaluators`).

It is built from a plain ``apply_fn`` (the Flax module's ``apply``) and never looks at
which model it trains. It runs on every local device with the axis name
``'batch'``: each device computes gradients on its shard (optionally as ``accum``
micro-batches summed with ``lax.scan``), gradients and metrics are averaged with
``pmean``, and every device applies the same optimizer update, so the replicated state
stays identical. The state buffers are donated: the update happens in place.

Randomness: the dropout key of a micro-batch is ``fold_in(fold_in(fold_in(key, step),
device), micro)``; a pure function of the step, so a resumed run draws the same keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from vitzoo.backbone.devices import AXIS
from vitzoo.evaluators.metrics import cross_entropy
from vitzoo.evaluators.multilabel_metrics import sigmoid_cross_entropy


@flax.struct.dataclass
class TrainState:
    """Everything the update changes: step counter, parameters, optimizer state."""

    step: jax.Array
    params: Any
    opt_state: Any


def init_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    """A fresh state at step 0 (replicate before use).

    ``tx.init`` runs under one ``jit``: eagerly it would compile a tiny program per
    parameter shape, seconds of start-up for a ViT.
    """
    opt_state = jax.jit(tx.init)(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)


def make_train_step(apply_fn: Callable[..., jax.Array], tx: optax.GradientTransformation, *,
                    num_classes: int, accum: int = 1, label_smoothing: float = 0.0,
                    pmap: bool = True, task: str = "multiclass"
                    ) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """``step(state, batch, key) -> (state, metrics)``; pmapped over ``'batch'`` unless ``pmap=False``.

    ``batch['image']`` is ``[per_device, H, W, 3]`` inside the map (``[devices, ...]``
    outside); with ``accum > 1`` it is split into ``accum`` equal micro-batches whose
    mean gradient equals the full-batch gradient.

    ``task`` ``multilabel``: ``batch['label']`` is multi-hot ``[..., num_classes]``, the
    loss the per-class sigmoid cross-entropy and ``accuracy`` the exact-match rate of the
    label sets at probability 0.5.
    """

    def loss_fn(params: Any, images: jax.Array, labels: jax.Array, key: jax.Array) -> Any:
        logits = apply_fn({"params": params}, images, train=True, rngs={"dropout": key})
        if task == "multilabel":
            loss = sigmoid_cross_entropy(logits, labels).mean()
            correct = jnp.all((logits > 0) == (labels > 0), axis=-1).mean()
            return loss, correct
        loss = cross_entropy(logits, labels, num_classes, label_smoothing).mean()
        correct = (jnp.argmax(logits, -1) == labels).mean()
        return loss, correct

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, batch: dict[str, jax.Array], key: jax.Array) -> Any:
        key = jax.random.fold_in(key, state.step)
        if pmap:
            key = jax.random.fold_in(key, jax.lax.axis_index(AXIS))
        images, labels = batch["image"], batch["label"]
        if accum == 1:
            (loss, correct), grads = grad_fn(state.params, images, labels, key)
        else:
            images = images.reshape(accum, -1, *images.shape[1:])
            labels = labels.reshape(accum, -1, *labels.shape[1:])

            def micro(carry: Any, xs: Any) -> Any:
                grad_sum, loss_sum, correct_sum = carry
                i, im, lb = xs
                (loss, correct), grads = grad_fn(state.params, im, lb, jax.random.fold_in(key, i))
                grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
                return (grad_sum, loss_sum + loss, correct_sum + correct), None

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            (grads, loss, correct), _ = jax.lax.scan(
                micro, (zeros, jnp.zeros(()), jnp.zeros(())), (jnp.arange(accum), images, labels))
            grads = jax.tree.map(lambda g: g / accum, grads)
            loss, correct = loss / accum, correct / accum
        if pmap:
            grads = jax.lax.pmean(grads, AXIS)
            loss, correct = jax.lax.pmean((loss, correct), AXIS)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "accuracy": correct, "grad_norm": optax.global_norm(grads)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    if not pmap:
        return jax.jit(step, donate_argnums=(0,))
    return jax.pmap(step, axis_name=AXIS, donate_argnums=(0,))
