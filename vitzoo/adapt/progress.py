"""What the user sees during a run: a rich progress bar, notes, and a one-screen summary.

Output goes to stderr so that ``--format json`` style stdout stays machine-readable;
only process 0 shows anything.
"""

from __future__ import annotations

from typing import Any

from vitzoo.text import percent


class Display:
    """Progress bar with loss, accuracy, img/s and ETA (``bar``), notes and the summary."""

    def __init__(self, enabled: bool = True, bar: bool = True) -> None:
        self.enabled = enabled
        self.bar = bar
        self._progress: Any = None
        self._task: Any = None
        self._console: Any = None
        if enabled:
            from rich.console import Console

            self._console = Console(stderr=True)

    def note(self, message: str) -> None:
        if self.enabled:
            self._console.print(f"[dim]•[/dim] {message}", highlight=False)

    def start(self, total: int, done: int) -> None:
        if not (self.enabled and self.bar):
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("finetune"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
            console=self._console, transient=False)
        self._task = self._progress.add_task("finetune", total=total, completed=done,
                                             stats="compiling...")
        self._progress.start()

    def advance(self, step: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    def update(self, step: int, entry: dict[str, Any]) -> None:
        if self._progress is None:
            return
        parts = []
        if "train_loss" in entry:
            parts.append(f"loss {entry['train_loss']:.3f}")
            parts.append(f"acc {percent(entry['train_accuracy'])}")
        if "eval_accuracy" in entry:
            parts.append(f"eval {percent(entry['eval_accuracy'])}")
        if entry.get("eval_map") is not None:
            parts.append(f"mAP {percent(entry['eval_map'])}")
        if entry.get("img_per_sec"):
            parts.append(f"{entry['img_per_sec']:.1f} img/s")
        self._progress.update(self._task, completed=step, stats="  ".join(parts))

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def summary(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from rich.table import Table

        m = record.get("final_metrics", {})
        o = record["options"]
        d = record["dataset"]
        table = Table(title="fine-tune finished", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()

        def fmt(value: Any, spec: str) -> str:
            return "n/a" if value is None else format(value, spec)

        rows = [
            ("model", f"{record['source']['architecture']}  ({record['source']['checkpoint']})"),
            ("dataset", f"{d['name']}  train {d['train_examples']} / eval {d['eval_examples']} "
                        f"({d['eval_split']}), {d['num_classes']} classes"),
            ("recipe", f"{o['steps']} steps, batch {record['batch']['global']} "
                       f"(accum {record['batch']['accum']}), lr {o['lr']}, res {o['res']}"),
            ("eval accuracy", f"top-1 {percent(m.get('eval_accuracy'), 2, 'n/a')}  "
                              f"top-5 {percent(m.get('eval_top5'), 2, 'n/a')}  "
                              f"loss {fmt(m.get('eval_loss'), '.4f')}") if "eval_map" not in m
            else ("eval (multi-label)", f"mAP {percent(m.get('eval_map'), 2, 'n/a')}  "
                                        f"F1 {percent(m.get('eval_f1'), 2, 'n/a')} (macro "
                                        f"{percent(m.get('eval_macro_f1'), 2, 'n/a')}) at "
                                        f"threshold {fmt(m.get('eval_threshold'), '.2f')}  "
                                        f"loss {fmt(m.get('eval_loss'), '.4f')}"),
            ("speed", f"{fmt(m.get('img_per_sec'), '.1f')} img/s, first step after "
                      f"{fmt(m.get('time_to_first_step_s'), '.1f')} s, "
                      f"total {fmt(m.get('wall_time_s'), '.0f')} s"),
            ("outputs", f"{record.get('final_npz')}, run.json, metrics.jsonl, tensorboard/"),
            ("catalog", str(record.get("catalog", ""))),
        ]
        if d.get("skipped_files"):
            rows.append(("skipped files", f"{len(d['skipped_files'])} unreadable (see run.log)"))
        for key, value in rows:
            table.add_row(key, value)
        self._console.print(table)
