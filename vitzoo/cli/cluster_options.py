"""``--coordinator/--num-processes/--process-id``, declared once for every command that can run
as one of several ``jax.distributed`` processes (``finetune``, ``finetune --head-only``,
``probe``). A command takes them as parameters (``coordinator: str = COORDINATOR``...) and
hands them to :func:`vitzoo.backbone.distributed.resolve`, which merges the environment
(``VITZOO_COORDINATOR``...) and checks them.
"""

from __future__ import annotations

import typer

COORDINATOR = typer.Option(None, "--coordinator", help="Multi-host: coordinator host:port.")
NUM_PROCESSES = typer.Option(None, "--num-processes", help="Multi-host: number of processes.")
PROCESS_ID = typer.Option(None, "--process-id", help="Multi-host: this process's index.")
