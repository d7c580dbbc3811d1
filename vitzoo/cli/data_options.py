"""The dataset and runtime options, declared once for every command that takes them.

:func:`data_options` generates one typer option per field of
:class:`~vitzoo.data.options.DataOptions` (default: the record's own), adds them to a
command's signature and hands the command one ``data`` record instead; :func:`runtime_options`
does the same for ``--compile-cache/--no-compile-cache`` (and, for the commands that run
a model, ``--autotune/--no-autotune``), which it applies before the command runs. ``finetune``,
``evaluate``, ``probe`` and ``recommend --dataset`` use both, so an option is spelled,
explained and defaulted the same way everywhere, and a new dataset setting is a new field
of the record plus one help line here.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import MISSING, fields
from typing import Any, TypeVar, get_args, get_type_hints

import typer

from vitzoo.data.options import DataOptions, remember_given
from vitzoo.errors import VitzooError

F = TypeVar("F", bound=Callable[..., Any])

#: Shared with ``download`` and ``export``, whose gs:// sources are checkpoints.
GCS_AUTH = typer.Option(False, "--gcs-auth", help=(
    "Read gs:// and s3:// sources (a bucket --dataset, a checkpoint to download) with your own "
    "credentials instead of anonymously."))

#: Field of DataOptions -> (option names, help). Every field needs a line here.
DATA_FLAGS: dict[str, tuple[tuple[str, ...], str]] = {
    "dataset": (("--dataset",), "TFDS name[:version], or an image folder (local path, gs:// or "
                                "s3:// URL)."),
    "train_split": (("--train-split",), "TFDS training split (slicing allowed, e.g. train[:90%])."),
    "eval_split": (("--eval-split", "--split"), "Evaluation split; default test, else validation, "
                                                "else one carved with --val-fraction; evaluate "
                                                "also takes 'all' (every image)."),
    "data_dir": (("--data-dir",), "TFDS data directory."),
    "manual_dir": (("--manual-dir",), "TFDS manual download directory."),
    "val_fraction": (("--val-fraction",), "Validation fraction carved when there is no test or "
                                          "validation split. probe: given, it also carves this "
                                          "share of each training class to rank candidates on, "
                                          "instead of the dataset's own validation split or 20%."),
    "stream": (("--stream",), "Stream TFDS splits from their files instead of reading them into "
                              "memory (automatic when they exceed the memory budget)."),
    "gcs_auth": (tuple(GCS_AUTH.param_decls or ()), str(GCS_AUTH.help)),
    "task": (("--task",), "multiclass (one class per image, softmax) or multilabel (any number, "
                          "sigmoid; scored by mAP and F1)."),
    "labels": (("--labels",), "Multi-label image folder: CSV of relative/path.jpg,class1;class2 "
                              "(default DIR/labels.csv)."),
}
#: ``recommend --data`` was the spelling before ``--dataset``; still accepted, not shown.
DATA_ALIAS = "data_alias"
_DATA_ALIAS_OPTION = typer.Option(None, "--data", hidden=True)
COMPILE_CACHE = typer.Option(None, "--compile-cache/--no-compile-cache", show_default=False, help=(
    "Reuse compiled programs from VITZOO_HOME/compile-cache [default: on, or "
    "VITZOO_COMPILE_CACHE=0 for off]."))
AUTOTUNE = typer.Option(None, "--autotune/--no-autotune", show_default=False, help=(
    "Time a few CPU settings the first time these shapes run on this machine and use the "
    "fastest, remembered in VITZOO_HOME/autotune.json: XLA's or oneDNN's matrix products "
    "(and, for finetune, host devices, XLA flags, micro-batch) [default: on, or "
    "VITZOO_AUTOTUNE=0 for off]."))


def _plain(hint: Any) -> Any:
    """``str | None`` -> ``str``: the type of the option's value when it is given."""
    args = [a for a in get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _option(name: str, default: Any, required: bool, argument: bool) -> Any:
    decls, help_text = DATA_FLAGS[name]
    if argument and name == "dataset":  # ``vitzoo data check DATASET``
        return typer.Argument(..., metavar="DATASET", help=help_text)
    return typer.Option(... if required else default, *decls, help=help_text)


def _with_parameters(command: Callable[..., Any], replaced: str,
                     added: list[inspect.Parameter]) -> tuple[inspect.Signature, dict[str, Any]]:
    """``command``'s signature without ``replaced`` and with ``added``; annotations to match."""
    signature = inspect.signature(command)
    kept = [p for p in signature.parameters.values() if p.name != replaced]
    annotations = {k: v for k, v in command.__annotations__.items() if k != replaced}
    annotations.update({p.name: p.annotation for p in added})
    return signature.replace(parameters=[*kept, *added]), annotations


#: The hidden parameter through which typer hands the generated wrapper its context.
_CONTEXT = "data_options_context"


def given_options(ctx: typer.Context) -> set[str]:
    """The parameters of ``ctx`` given on the command line (or the environment), even at their
    default value (click's parameter source)."""
    given = {"COMMANDLINE", "ENVIRONMENT", "PROMPT"}  # by name: typer may carry its own click
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", None) in given}


def data_options(*, required: bool = True, exclude: Iterable[str] = (),
                 argument: bool = False) -> Callable[[F], F]:
    """Give ``command`` the dataset options; it receives ``data: DataOptions`` (None when not
    ``required`` and no ``--dataset`` was given). ``exclude``: fields the command has no use for
    (they keep the record's default). ``argument``: the dataset is the command's argument
    ``DATASET`` instead of ``--dataset``."""
    skipped = set(exclude)
    unknown = skipped - set(DATA_FLAGS)
    assert not unknown and set(DATA_FLAGS) == {f.name for f in fields(DataOptions)}, unknown
    names = [f.name for f in fields(DataOptions) if f.name not in skipped]
    defaults = {f.name: f.default for f in fields(DataOptions) if f.default is not MISSING}
    types = {name: _plain(hint) for name, hint in get_type_hints(DataOptions).items()}

    def decorate(command: F) -> F:
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=types[name],
                                   default=_option(name, defaults.get(name),
                                                   required and name == "dataset", argument))
                 for name in names]
        if not required:
            added.append(inspect.Parameter(DATA_ALIAS, inspect.Parameter.KEYWORD_ONLY,
                                           annotation=str, default=_DATA_ALIAS_OPTION))
        # typer hands its context to one parameter only: the command's own, when it has one
        own_context = next((p.name for p in inspect.signature(command).parameters.values()
                            if p.annotation in (typer.Context, "typer.Context")), None)
        if own_context is None:
            added.append(inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY,
                                           annotation=typer.Context))

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            context = kwargs.get(own_context) if own_context else kwargs.pop(_CONTEXT, None)
            remember_given(given_options(context) & set(names) if context else ())
            values = {name: kwargs.pop(name) for name in names}
            alias = kwargs.pop(DATA_ALIAS, None)
            if alias is not None and values["dataset"] not in (None, alias):
                raise VitzooError("give the dataset once", "use --dataset (--data is its old name)")
            values["dataset"] = values["dataset"] or alias
            kwargs["data"] = DataOptions(**values) if values["dataset"] else None
            return command(*args, **kwargs)

        wrapper.__signature__, wrapper.__annotations__ = _with_parameters(command, "data", added)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def runtime_options(command: F | None = None, *, autotune: bool = False) -> Any:
    """Give a command ``--compile-cache/--no-compile-cache``, applied before it runs.

    The choice is remembered by :func:`vitzoo.runtime.set_compile_cache_choice`, which
    :func:`vitzoo.runtime.configure` reads when the command starts JAX. With
    ``@runtime_options(autotune=True)`` (the commands that run a model: ``finetune``,
    ``evaluate``, ``predict``, ``probe``, ``recommend``) the command also gets
    ``--autotune/--no-autotune``, remembered by :func:`vitzoo.runtime.set_autotune_choice`.
    """
    if command is None:
        return functools.partial(runtime_options, autotune=autotune)
    switches = {"compile_cache": (COMPILE_CACHE, "set_compile_cache_choice")}
    if autotune:
        switches["autotune"] = (AUTOTUNE, "set_autotune_choice")
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=bool | None,
                               default=option) for name, (option, _) in switches.items()]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from vitzoo import runtime

        for name, (_, setter) in switches.items():
            getattr(runtime, setter)(kwargs.pop(name, None))
        return command(*args, **kwargs)

    signature, annotations = _with_parameters(command, "compile_cache", added)
    wrapper.__signature__, wrapper.__annotations__ = signature, annotations  # type: ignore[attr-defined]
    return wrapper
