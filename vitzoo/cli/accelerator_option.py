"""``--allow-cpu``, declared once and attached to every command that runs a model on JAX.

The option's callback hands the choice to :mod:`vitzoo.accelerators` as the command line
is parsed (it runs with the default too, so one in-process call never decides for the
next); :func:`vitzoo.runtime.require_accelerator` reads it where JAX starts. A command
takes it as a parameter it never reads: ``allow_cpu: bool = ALLOW_CPU``.
"""

from __future__ import annotations

import typer


def _remember(value: bool) -> bool:
    from vitzoo.accelerators import set_allow_cpu

    set_allow_cpu(value)
    return value


ALLOW_CPU = typer.Option(
    False, "--allow-cpu", callback=_remember,
    help="Run on the CPU even when this machine has a GPU or TPU that JAX cannot use "
         "(by default the command stops and names the install that fixes it).")
