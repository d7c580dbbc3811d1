"""The ``vitzoo`` command: a thin typer layer over the library.

Each ``*_cmds`` module registers its own commands and imports heavy libraries
only inside the command functions, so ``vitzoo list`` never pays for jax,
flax or tensorflow.
"""

from __future__ import annotations

import importlib
import sys

import typer

from vitzoo.errors import VitzooError

# Modules that add commands to the app; each defines ``register(app)``.
COMMAND_MODULES: tuple[str, ...] = (
    "vitzoo.cli.catalog_cmds",
    "vitzoo.cli.fetch_cmds",
    "vitzoo.cli.predict_cmds",
    "vitzoo.cli.plot_cmds",
    "vitzoo.cli.adapt_cmds",
    "vitzoo.cli.probe_cmds",
)

app = typer.Typer(
    name="vitzoo",
    help="Search, choose and fine-tune Google's Vision Transformer checkpoint zoo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)



def _print_version(value: bool) -> None:
    if value:
        from vitzoo import __version__

        typer.echo(f"vitzoo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Search, choose and fine-tune Google's Vision Transformer checkpoint zoo."""


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error to stderr and exit; never a traceback."""
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user mistakes become one line on stderr."""
    try:
        app(args=argv, standalone_mode=True)
    except VitzooError as exc:
        fail(exc.one_line())
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    except BrokenPipeError:  # `vitzoo list | head`
        sys.stderr.close()
        raise SystemExit(0) from None
