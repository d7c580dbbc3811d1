"""The ``vitzoo`` command: a thin typer layer over the library.

Each ``*_cmds`` module registers its own commands and imports heavy libraries
only inside the command functions, so ``vitzoo list`` never pays for jax,
flax or tensorflow.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from vitzoo.errors import VitzooError

# Modules that add commands to the app; each defines ``register(app)``.
COMMAND_MODULES: tuple[str, ...] = (
    "vitzoo.cli.catalog_cmds",
    "vitzoo.cli.fetch_cmds",
    "vitzoo.cli.predict_cmds",
    "vitzoo.cli.plot_cmds",
    "vitzoo.cli.adapt_cmds",
    "vitzoo.cli.export_cmds",
    "vitzoo.cli.probe_cmds",
    "vitzoo.cli.data_cmds",
)


class FullHelpGroup(TyperGroup):
    """A command group whose listing shows each command's whole first paragraph, wrapped.

    Why: click cuts every description to what fits on one line beside the longest command
    name, and never uses more than 80 columns, so ``vitzoo -h`` ended each one in "..."
    (and its sentence detection stops at an abbreviation such as "sec. 4.5").
    """

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                text = command.short_help or (command.help or "").split("\n\n")[0]
                rows.append((name, " ".join(text.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    cls=FullHelpGroup,
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
    verbose: bool = typer.Option(False, "--verbose", help="Keep TensorFlow's start-up notices "
                                 "on stderr (oneDNN, absl; hidden by default, errors always shown)."),
) -> None:
    """Search, choose and fine-tune Google's Vision Transformer checkpoint zoo."""
    if not verbose:
        from vitzoo.runtime import quiet_library_logs

        quiet_library_logs()  # before any command imports tensorflow


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def _list_in_full(typer_app: typer.Typer) -> None:
    """Give the command groups (``index``, ``cache``) the root's whole-paragraph listing."""
    for group in typer_app.registered_groups:
        group.cls = FullHelpGroup
        if group.typer_instance is not None:
            _list_in_full(group.typer_instance)


_list_in_full(app)


#: Top-level module -> the pip package that provides it (where the names differ or matter).
PACKAGE_OF_MODULE: dict[str, str] = {
    "jax": "jax", "jaxlib": "jax", "flax": "flax", "optax": "optax", "scipy": "scipy",
    "tensorflow": "tensorflow-cpu", "tensorflow_datasets": "tensorflow-datasets",
    "huggingface_hub": "huggingface-hub", "safetensors": "safetensors", "PIL": "pillow",
    "matplotlib": "matplotlib", "tensorboardX": "tensorboardx", "gcsfs": "gcsfs",
    "fsspec": "fsspec", "aiohttp": "aiohttp", "pandas": "pandas", "pyarrow": "pyarrow",
    "filelock": "filelock", "numpy": "numpy", "rich": "rich", "yaml": "pyyaml",
    "google_crc32c": "google-crc32c", "ml_dtypes": "ml-dtypes", "packaging": "packaging",
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


def usage_line(exc: typer.TyperException) -> str:
    """One line for a command-line mistake typer caught (a value not among the choices, a
    missing argument, an unknown option): its message and where the help is."""
    message = " ".join(exc.format_message().split())
    # typer validates choices with pydantic, whose messages start with this
    message = message.replace(": Value error, ", ": ")
    message = message[:1].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    where = f" See '{ctx.command_path} -h'." if ctx is not None else ""
    return f"{message.rstrip('.')}.{where}"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user mistakes become one line on stderr."""
    from vitzoo.runtime import tune_malloc_early

    tune_malloc_early()  # before a library starts a thread (see its docstring)
    try:
        # Not standalone: typer's own usage errors come here, to be said in one line too.
        outcome = app(args=argv, prog_name="vitzoo", standalone_mode=False)
    except VitzooError as exc:
        fail(exc.one_line())
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `vitzoo` alone: the help page
            exc.show()
            raise SystemExit(getattr(exc, "exit_code", 2)) from None
        fail(usage_line(exc), code=getattr(exc, "exit_code", 2))
    except typer.Abort:
        fail("aborted", code=1)
    except ModuleNotFoundError as exc:  # a broken or partial install: say what to install
        fail(missing_module_message(exc))
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    except BrokenPipeError:  # `vitzoo list | head`
        sys.stderr.close()
        raise SystemExit(0) from None
    except OSError as exc:  # a disk that fills up (or turns read-only) mid-run: never our bug
        from vitzoo.atomic import disk_error

        error = disk_error(exc)
        if error is None:
            raise
        fail(error.one_line())
    # typer.Exit(code) arrives here as its code; a command's own return value means success
    raise SystemExit(outcome if isinstance(outcome, int) else 0)
