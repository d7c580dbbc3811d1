"""Exact resume: what a checkpoint records, and what a rerun must agree with to continue.

A rerun in the same workdir continues the run when its settings (``identity``) are the
ones recorded, and reads its training data the way the run started (streamed or in
memory, same shuffle buffer): another way would be another order of batches. The step
is the data position (the pipelines are a pure function of seed and step), so the
checkpoint needs no iterator state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitzoo.adapt import train_state
from vitzoo.adapt.options import FinetuneOptions
from vitzoo.errors import VitzooError


def recorded_data(meta: dict[str, Any] | None,
                  options: FinetuneOptions) -> dict[str, Any] | None:
    """How the checkpointed run read its training data; refuses a contradicting ``--stream``."""
    if meta is None or "data" not in meta:
        return None
    recorded = dict(meta["data"])
    if options.stream and not recorded.get("train_streaming"):
        raise VitzooError(f"{options.workdir} holds a run that read its training data in "
                          "memory; --stream would change the order of its batches",
                          "rerun without --stream to resume, or use a new --workdir")
    return recorded


def restore_or_start(template: Any, meta: dict[str, Any] | None, options: FinetuneOptions,
                     workdir: Path) -> tuple[Any, dict[str, Any] | None, int]:
    """``(state, meta, step)``: the checkpoint's when there is one with the same settings."""
    if meta is None:
        return template, None, 0
    changes = options.changes_from(meta.get("identity", {}))
    if changes:
        diffs = ", ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in changes[:4])
        raise VitzooError(f"{workdir} holds a run with different settings ({diffs})",
                          "rerun with the same settings to resume, or use a new --workdir")
    state, meta = train_state.restore(workdir, template)
    return state, meta, int(meta["step"])


class Checkpointer:
    """Saves the replicated train state with everything a resume checks (process 0 writes)."""

    def __init__(self, workdir: Path, options: FinetuneOptions, *, global_batch: int,
                 read_mode: dict[str, Any], enabled: bool) -> None:
        self.workdir, self.options, self.global_batch = workdir, options, global_batch
        self.read_mode, self.enabled = read_mode, enabled

    def save(self, step: int, device_state: Any, extra: dict[str, Any] | None = None) -> None:
        from vitzoo.backbone.devices import unreplicate

        host_state = unreplicate(device_state)
        if not self.enabled:
            return
        train_state.save(self.workdir, host_state, {
            "step": step, "identity": self.options.identity(), "seed": self.options.seed,
            "data_position": {"step": step, "examples_seen": step * self.global_batch},
            "rng": {"dropout_key_seed": self.options.seed}, "data": self.read_mode,
            **(extra or {})})
