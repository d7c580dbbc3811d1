"""The ``vitzoo`` command: a thin typer layer over the library.

Each ``*_cmds`` module registers its own commands and imports heavy libraries
only inside the command functions, so ``vitzoo list`` never pays for jax,
flax or tensorflow.
"""

from __future__ import annotations

import importlib
import sys

import typer
import typer.core

from vitzoo.errors import VitzooError

# Plain help text: typer escapes "[default: ...]" for rich markup whenever rich is
# installed, even with rich_markup_mode=None, which prints a stray backslash.
# This flag is read only by that escaping and by rich formatting, which we don't use.
typer.core.HAS_RICH = False

# Modules that add commands to the app; each defines ``register(app)``.
COMMAND_MODULES: tuple[str, ...] = (
    "vitzoo.cli.catalog_cmds",
    "vitzoo.cli.fetch_cmds",
    "vitzoo.cli.predict_cmds",
    "vitzoo.cli.plot_cmds",
    "vitzoo.cli.adapt_cmds",
    "vitzoo.cli.export_cmds",
    "vitzoo.cli.probe_cmds",
)

app = typer.Typer(
    name="vitzoo",
    help="Search, choose and fine-tune Google's Vision Transformer checkpoint zoo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every subcommand
)


def _print_version(value: bool) -> None:
    if value:
        from vitzoo.versions import VITZOO_VERSION as __version__

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


#: Top-level module -> the pip package that provides it (where the names differ or matter).
PACKAGE_OF_MODULE: dict[str, str] = {
    "jax": "jax", "jaxlib": "jax", "flax": "flax", "optax": "optax", "scipy": "scipy",
    "tensorflow": "tensorflow-cpu", "tensorflow_datasets": "tensorflow-datasets",
    "huggingface_hub": "huggingface-hub", "safetensors": "safetensors", "PIL": "pillow",
    "matplotlib": "matplotlib", "tensorboardX": "tensorboardx", "gcsfs": "gcsfs",
    "fsspec": "fsspec", "aiohttp": "aiohttp", "pandas": "pandas", "pyarrow": "pyarrow",
    "filelock": "filelock", "numpy": "numpy", "rich": "rich", "yaml": "pyyaml",
}


def missing_module_message(exc: ModuleNotFoundError) -> str:
    """One line naming the package to install for a module that could not be imported."""
    module = (exc.name or "").split(".")[0]
    if not module:
        return f"a Python module could not be imported ({exc}); reinstall vitzoo: pip install vitzoo"
    if module == "vitzoo":
        return (f"this vitzoo installation is incomplete (module {exc.name} is missing); "
                "reinstall it: pip install --force-reinstall vitzoo")
    package = PACKAGE_OF_MODULE.get(module, module)
    return (f"this command needs the Python package {package!r} (module {module!r}), which is not "
            f"installed; install it with: pip install {package} (or reinstall vitzoo, which "
            "depends on it: pip install vitzoo; for GPUs pip install 'vitzoo[cuda12]')")


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
    except ModuleNotFoundError as exc:  # a broken or partial install: say what to install
        fail(missing_module_message(exc))
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    except BrokenPipeError:  # `vitzoo list | head`
        sys.stderr.close()
        raise SystemExit(0) from None
