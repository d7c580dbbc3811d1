"""Filtering, sorting and aggregating the catalog, in plain Python.

The CLI and the pandas API share this code. ``--where`` takes a Python-like
expression (``adapt_final_val > 0.9 and ds == "i21k"``) that is parsed with
``ast`` and evaluated column by column by a small interpreter that knows only
comparisons, arithmetic, and/or/not, ``in [...]`` and ``isnull``/``notnull``;
nothing is ever ``eval``'d. Unknown values (None) make a comparison false,
as in SQL.
"""

from __future__ import annotations

import ast
import fnmatch
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vitzoo.catalog.caveats import pretrained_caveats
from vitzoo.catalog.frame import Frame
from vitzoo.catalog.schema import MEASURED_COLUMNS, PRETRAINED_COLUMNS
from vitzoo.errors import VitzooError
from vitzoo.names import (
    ADAPT_DATASETS,
    AUGMENTATIONS,
    canonical_arch,
    canonical_pretrain_ds,
    did_you_mean,
    strip_hub_prefix,
)


@dataclass
class Filters:
    """The filters of ``vitzoo list`` / ``vitzoo.query``; empty means no constraint."""

    arch: Sequence[str] = ()
    ds: Sequence[str] = ()
    aug: Sequence[str] = ()
    wd: Sequence[float] = ()
    do: Sequence[float] = ()
    sd: Sequence[float] = ()
    adapt_ds: Sequence[str] = ()
    res: Sequence[int] = ()
    adapt_lr: Sequence[float] = ()
    steps: Sequence[int] = ()
    collection: Sequence[str] = ()
    name: Sequence[str] = ()  # globs over the checkpoint's names (vitzoo's and timm's)
    where: str | None = None


#: Filter name -> the catalog column it constrains.
FILTER_COLUMNS = {
    "arch": "name", "ds": "ds", "aug": "aug", "wd": "wd", "do": "do", "sd": "sd",
    "adapt_ds": "adapt_ds", "res": "adapt_resolution", "adapt_lr": "adapt_lr",
    "steps": "adapt_steps", "collection": "collection",
}
#: Filters that read more than their own column.
EXTRA_FILTER_COLUMNS = {
    "collection": ("url",),
    "name": ("checkpoint", "filename", "hf_repo", "upstream_hf_repo"),
}
_NAME_COLUMNS = EXTRA_FILTER_COLUMNS["name"]


def _listify(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str | int | float):
        return [value]
    return list(value)


def make_filters(**kwargs: Any) -> Filters:
    """Build :class:`Filters` from keyword arguments, accepting scalars or lists."""
    known = set(FILTER_COLUMNS) | {"name"}
    unknown = set(kwargs) - known - {"where"}
    if unknown:
        raise VitzooError(f"unknown filter(s) {', '.join(sorted(unknown))}",
                          f"valid filters: {', '.join(sorted(known | {'where'}))}")
    values = {k: _listify(v) for k, v in kwargs.items() if k in known}
    return Filters(**values, where=kwargs.get("where"))


def _choice(value: str, choices: Iterable[str], what: str) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise VitzooError(f"unknown {what} {value!r}",
                          f"{did_you_mean(value, choices)}valid choices: {', '.join(choices)}")
    return value


def _known_numbers(frame: Frame, column: str, wanted: Sequence[float], option: str) -> None:
    """A value no row has is a mistake (``--res 300``), not an empty answer."""
    known = sorted({v for v in frame.column(column) if v is not None})
    for value in wanted:
        if not any(abs(float(value) - k) <= 1e-9 for k in known):
            shown = ", ".join(f"{k:g}" for k in known)
            raise VitzooError(f"no checkpoint has {option} {value:g}", f"valid values: {shown}")


def url_folder(url: str | None) -> str | None:
    """``gs://bucket/a/b/file.npz`` -> ``a/b``: the folder (collection) a file lives in."""
    if not url or "://" not in url:
        return None
    _, _, path = url.split("://", 1)[1].partition("/")
    return path.rpartition("/")[0] or None


def _collections_of(collection: str | None, url: str | None) -> set[str]:
    """Every collection name a row answers to: its own, its file's folder, and their parents
    (``mixer`` for ``mixer/imagenet1k``), so the names `show` prints all work as filters."""
    names = {c for c in (collection, url_folder(url)) if c}
    return names | {n.split("/", 1)[0] for n in names}


def _plain_name(value: Any) -> str:
    """A name as compared: any case, without ``hf-hub:``/``timm/`` or ``.npz``."""
    return strip_hub_prefix(str(value)).lower().removeprefix("timm/").removesuffix(".npz")


#: Columns that name a fine-tuned file, and those that name its pre-trained file.
_FINETUNE_NAMES = ("checkpoint", "hf_repo")
_PRETRAINED_NAMES = ("filename", "upstream_hf_repo")


def exact_name_kind(frame: Frame, pattern: str) -> str | None:
    """``finetuned`` / ``pretrained`` when ``pattern`` (no wildcard) is exactly a name some row
    carries (a checkpoint, a timm or Hugging Face name, a release file name), as `show`
    resolves it; None when it is only part of names (then it is a substring)."""
    if any(ch in pattern for ch in "*?["):
        return None
    wanted = _plain_name(pattern)
    for kind, columns in (("finetuned", _FINETUNE_NAMES), ("pretrained", _PRETRAINED_NAMES)):
        for column in columns:
            if column in frame.column_names and any(
                    v and _plain_name(v) == wanted for v in frame.column(column)):
                return kind
    return None


def _name_matcher(patterns: Sequence[str], frame: Frame) -> Callable[[Sequence[Any]], bool]:
    """Globs like timm's ``list_models('*augreg*')``; an exact name (what `show` accepts)
    selects exactly its file; any other text without a wildcard is a substring. Takes a row's
    values of :data:`_NAME_COLUMNS` (missing columns: None)."""
    globs, exact = [], []
    for pattern in patterns:
        kind = exact_name_kind(frame, pattern)
        if kind is not None:
            exact.append((_plain_name(pattern), _FINETUNE_NAMES if kind == "finetuned"
                          else _PRETRAINED_NAMES))
        else:
            text = strip_hub_prefix(pattern).lower()
            globs.append(text if any(ch in text for ch in "*?[") else f"*{text}*")
    positions = {c: i for i, c in enumerate(_NAME_COLUMNS)}

    def matches(values: Sequence[Any]) -> bool:
        for wanted, columns in exact:
            if any(values[positions[c]] and _plain_name(values[positions[c]]) == wanted
                   for c in columns):
                return True
        for value in values:
            if value:
                text = str(value).lower()
                if any(fnmatch.fnmatchcase(c, g) for c in (text, text.removeprefix("timm/"))
                       for g in globs):
                    return True
        return False

    return matches


def _close_to_any(values: Sequence[float]) -> Callable[[Any], bool]:
    # Float columns hold values like 0.03; compare with a tolerance, not bit equality.
    targets = [float(v) for v in values]
    return lambda x: x is not None and any(abs(x - t) <= 1e-9 for t in targets)


def _pretrain_ds(value: str, frame: Frame) -> str:
    """A pre-training dataset: an AugReg alias (``imagenet21k`` -> ``i21k``), or a value some
    row has (the other families' data as timm names it: ``lvd142m``, ``laion2b``)."""
    known = {d for d in frame.column("ds") if d} if "ds" in frame.column_names else set()
    if value in known:
        return value
    try:
        return canonical_pretrain_ds(value)
    except VitzooError as exc:
        others = sorted(known - {"i1k", "i21k", "i21k_30"})
        if not others:
            raise
        raise VitzooError(exc.message, f"{did_you_mean(value, sorted(known))}valid choices: i1k, "
                          f"i21k, i21k_30 (AugReg) and {', '.join(others)}") from None


def _predicates(frame: Frame, filters: Filters) -> list[tuple[str, Callable[[Any], bool]]]:
    """(column, test) pairs; allowed values are validated so typos fail loudly."""
    preds: list[tuple[str, Callable[[Any], bool]]] = []
    if filters.arch:
        wanted = {canonical_arch(a) for a in filters.arch}
        preds.append(("name", wanted.__contains__))
    if filters.ds:
        wanted = {_pretrain_ds(d, frame) for d in filters.ds}
        preds.append(("ds", wanted.__contains__))
    if filters.aug:
        wanted = {_choice(a, AUGMENTATIONS, "augmentation") for a in filters.aug}
        preds.append(("aug", wanted.__contains__))
    options = {"wd": "--wd", "do": "--do", "sd": "--sd", "adapt_lr": "--adapt-lr",
               "res": "--res", "steps": "--steps"}
    for key, option in options.items():
        if getattr(filters, key):
            _known_numbers(frame, FILTER_COLUMNS[key], getattr(filters, key), option)
    for key in ("wd", "do", "sd", "adapt_lr"):
        if getattr(filters, key):
            preds.append((FILTER_COLUMNS[key], _close_to_any(getattr(filters, key))))
    if filters.adapt_ds:
        known = sorted(set(ADAPT_DATASETS) | {d for d in frame.column("adapt_ds") if d})
        wanted = {_choice(d, known, "fine-tuning dataset") for d in filters.adapt_ds}
        preds.append(("adapt_ds", wanted.__contains__))
    for key, column in (("res", "adapt_resolution"), ("steps", "adapt_steps")):
        if getattr(filters, key):
            preds.append((column, {int(v) for v in getattr(filters, key)}.__contains__))
    return preds


def _row_tests(frame: Frame, filters: Filters) -> list[list[bool]]:
    """Filters that look at several columns of a row: --collection and --name."""
    masks = []
    if filters.collection:
        per_row = [_collections_of(c, u) for c, u in zip(
            frame.column("collection"), frame.column("url"), strict=True)]
        known = sorted(set().union(*per_row)) if per_row else []
        wanted = {_choice(c, known, "collection") for c in filters.collection}
        masks.append([bool(names & wanted) for names in per_row])
    if filters.name:
        test = _name_matcher(filters.name, frame)
        none = [None] * frame.num_rows
        columns = [frame.column(c) if c in frame.column_names else none for c in _NAME_COLUMNS]
        masks.append([test(values) for values in zip(*columns, strict=True)])
    return masks


def filter_mask(frame: Frame, filters: Filters) -> list[bool] | None:
    """Which rows pass every filter (None: keep everything)."""
    mask: list[bool] | None = None
    for column, test in _predicates(frame, filters):
        values = frame.column(column)
        mask = [test(v) for v in values] if mask is None else [
            keep and test(v) for keep, v in zip(mask, values, strict=True)]
    for row_mask in _row_tests(frame, filters):
        mask = row_mask if mask is None else [a and b for a, b in zip(mask, row_mask, strict=True)]
    if filters.where:
        where = compile_where(filters.where, frame)
        mask = where if mask is None else [a and b for a, b in zip(mask, where, strict=True)]
    return mask


def apply_filters(frame: Frame, filters: Filters) -> Frame:
    mask = filter_mask(frame, filters)
    return frame if mask is None else frame.filter(mask)


def where_columns(expression: str) -> set[str] | None:
    """Column names an expression mentions (None if it does not parse)."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return None
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


# --- --where -------------------------------------------------------------------

_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_FUNCS = ("isnull", "notnull", "abs")


class _Column(list):
    """A column of values inside an expression (a plain list marks a literal list)."""


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def compile_where(expression: str, frame: Frame) -> list[bool]:
    """Evaluate a ``--where`` expression to one boolean per row of ``frame``."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise VitzooError(f"cannot parse --where {expression!r}: {exc.msg}",
                          'write it like: adapt_final_val > 0.9 and ds == "i21k"') from exc
    interpreter = _Where(expression, frame)
    result = interpreter.eval(tree.body)
    if not isinstance(result, _Column) or not all(isinstance(v, bool) for v in result):
        raise VitzooError(f"--where {expression!r} is not a condition",
                          "use a comparison such as final_val > 0.5")
    return list(result)


class _Where:
    def __init__(self, expression: str, frame: Frame) -> None:
        self.expression = expression
        self.frame = frame

    def fail(self, problem: str, hint: str) -> VitzooError:
        return VitzooError(f"--where {self.expression!r}: {problem}", hint)

    def broadcast(self, value: Any) -> list:
        return value if isinstance(value, _Column) else [value] * self.frame.num_rows

    def elementwise(self, fn: Callable, left: Any, right: Any, null: Any,
                    node: ast.AST | None = None, numeric: bool = False) -> Any:
        """``fn`` over the rows (or on two constants); a value it cannot take is a one-line
        error naming the part of the expression (``numeric``: arithmetic, numbers only)."""
        part = (ast.get_source_segment(self.expression, node) if node is not None else None) or \
            self.expression

        def apply(a: Any, b: Any) -> Any:
            if _is_null(a) or _is_null(b):
                return null
            if numeric and not all(isinstance(v, int | float) for v in (a, b)):
                text = a if not isinstance(a, int | float) else b
                raise self.fail(f"{part!r} does arithmetic on the text {text!r}",
                                "arithmetic (+ - * / abs) takes numeric columns and numbers")
            try:
                return fn(a, b)
            except ZeroDivisionError as exc:
                raise self.fail(f"division by zero in {part!r}",
                                "divide by a non-zero number or column") from exc
            except (TypeError, ValueError, ArithmeticError) as exc:
                raise self.fail(f"cannot compare {a!r} with {b!r} in {part!r}",
                                "quote strings and compare numbers with numeric columns") from exc

        if not isinstance(left, _Column) and not isinstance(right, _Column):
            return apply(left, right)
        return _Column(apply(a, b) for a, b in zip(self.broadcast(left), self.broadcast(right),
                                                     strict=True))

    def eval(self, node: ast.AST) -> Any:
        method = getattr(self, f"eval_{type(node).__name__}", None)
        if method is None:
            shown = ast.get_source_segment(self.expression, node) or type(node).__name__
            raise self.fail(
                f"unsupported syntax {shown!r}",
                "use column names, numbers, quoted strings, and/or/not, comparisons, "
                "in [...], isnull(col), notnull(col)")
        return method(node)

    def eval_BoolOp(self, node: ast.BoolOp) -> Any:
        values = [self.broadcast(self.eval(v)) for v in node.values]
        combine = all if isinstance(node.op, ast.And) else any
        return _Column(combine(bool(x) for x in row) for row in zip(*values, strict=True))

    def eval_UnaryOp(self, node: ast.UnaryOp) -> Any:
        operand = self.eval(node.operand)
        if isinstance(node.op, ast.Not | ast.Invert):
            return _Column(not bool(v) for v in self.broadcast(operand))
        if isinstance(node.op, ast.USub):
            return self.elementwise(lambda a, _: -a, operand, 0, None, node, numeric=True)
        raise self.fail("unsupported operator", "use not, -")

    def eval_Compare(self, node: ast.Compare) -> Any:
        left = self.eval(node.left)
        result = None
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.eval(comparator)
            if isinstance(op, ast.In | ast.NotIn):
                if isinstance(right, _Column) or not isinstance(right, list):
                    raise self.fail("'in' needs a list like [1, 2]", 'e.g. aug in ["none", "light1"]')
                members = set(right)
                negate = isinstance(op, ast.NotIn)
                part = _Column((v in members) != negate for v in self.broadcast(left))
            elif type(op) in _COMPARE:
                part = _Column(bool(v) for v in self.broadcast(
                    self.elementwise(_COMPARE[type(op)], left, right, False, node)))
            else:
                raise self.fail("unsupported comparison", "use ==, !=, <, <=, >, >=, in, not in")
            result = part if result is None else _Column(
                a and b for a, b in zip(result, part, strict=True))
            left = right
        return result

    def eval_BinOp(self, node: ast.BinOp) -> Any:
        left, right = self.eval(node.left), self.eval(node.right)
        if isinstance(node.op, ast.BitAnd | ast.BitOr):
            combine = operator.and_ if isinstance(node.op, ast.BitAnd) else operator.or_
            return _Column(combine(bool(a), bool(b)) for a, b in zip(
                self.broadcast(left), self.broadcast(right), strict=True))
        if type(node.op) in _ARITH:
            return self.elementwise(_ARITH[type(node.op)], left, right, None, node, numeric=True)
        raise self.fail("unsupported operator", "use + - * / & |")

    def eval_Name(self, node: ast.Name) -> Any:
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        if node.id not in self.frame.column_names:
            raise self.fail(f"unknown column {node.id!r}", column_hint(node.id, self.frame))
        return _Column(self.frame.column(node.id))

    def eval_Constant(self, node: ast.Constant) -> Any:
        if isinstance(node.value, str | int | float | bool) or node.value is None:
            return node.value
        raise self.fail(f"unsupported constant {node.value!r}", "use numbers or quoted strings")

    def eval_List(self, node: ast.List | ast.Tuple) -> Any:
        values = [self.eval(e) for e in node.elts]
        if any(isinstance(v, _Column) for v in values):
            raise self.fail("lists may hold only constants", 'e.g. aug in ["none", "light1"]')
        return values

    eval_Tuple = eval_List

    def eval_Call(self, node: ast.Call) -> Any:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in _FUNCS or len(node.args) != 1 or node.keywords:
            raise self.fail("unsupported call", "only isnull(col), notnull(col), abs(col)")
        values = self.broadcast(self.eval(node.args[0]))
        if name == "isnull":
            return _Column(_is_null(v) for v in values)
        if name == "notnull":
            return _Column(not _is_null(v) for v in values)
        return self.elementwise(lambda a, _: abs(a), _Column(values), 0, None, node, numeric=True)


# --- shaping -------------------------------------------------------------------

#: Columns a query computes on demand, so they are valid names before they exist in a frame.
COMPUTED_COLUMNS = ("available",)


def column_hint(name: str, frame: Frame) -> str:
    """``did you mean ...? columns are: ...``, naming the computed columns (``available``) too."""
    names = [*frame.column_names, *(c for c in COMPUTED_COLUMNS if c not in frame.column_names)]
    return f"{did_you_mean(name, names)}columns are: {', '.join(names)}"

#: Columns about a row's own file: in the pre-trained view, kept for a file listed without
#: fine-tunes (an older collection's, another family's), null where the row is a fine-tune.
_FILE_OWN_COLUMNS = ("params", *(c.name for c in MEASURED_COLUMNS))


def pretrained_view(frame: Frame) -> Frame:
    """One row per pre-trained checkpoint, with how many of its fine-tunes are listed."""
    columns = [c for c in PRETRAINED_COLUMNS if c in frame.column_names]
    keys = [url or checkpoint for url, checkpoint in zip(
        frame.column("url"), frame.column("checkpoint"), strict=True)]
    first: dict[Any, int] = {}
    counts: dict[Any, int] = {}
    for i, (key, adapt) in enumerate(zip(keys, frame.column("adapt_filename"), strict=True)):
        first.setdefault(key, i)
        counts[key] = counts.get(key, 0) + (adapt is not None)
    view = frame.select(columns).take(list(first.values()))
    names = [pretrained_name(f, u, c) for f, u, c in zip(
        view.column("filename"), view.column("url"), view.column("collection"), strict=True)]
    columns = {"checkpoint": names, **view.to_pydict(), "finetunes": list(counts.values())}
    for column in _FILE_OWN_COLUMNS:  # a fine-tune's count or accuracy is not its upstream's
        if column in frame.column_names:
            values = frame.column(column)
            columns[column] = [values[i] if not counts[key] else None for key, i in first.items()]
    if "caveats" in frame.column_names:  # those of the pre-trained file, not of its fine-tunes
        columns["caveats"] = [pretrained_caveats(frame.column("caveats")[i]) for i in first.values()]
    return Frame(columns)


def pretrained_name(filename: str | None, url: str | None, collection: str | None) -> str | None:
    """The name that `show`/`download` accept for a pre-trained file: the AugReg stem, or
    ``folder/stem`` for the older collections (whose stems repeat across folders)."""
    if not filename or collection in ("augreg", "local"):
        return filename
    folder = url_folder(url)
    return f"{folder}/{filename}" if folder else filename


def sort_frame(frame: Frame, column: str | None, descending: bool) -> Frame:
    """Stable sort on one column; unknown values always last."""
    if not column:
        return frame
    if column not in frame.column_names:
        raise VitzooError(f"cannot sort by unknown column {column!r}",
                          column_hint(column, frame))
    values = frame.column(column)
    known = [i for i, v in enumerate(values) if not _is_null(v)]
    unknown = [i for i, v in enumerate(values) if _is_null(v)]
    known.sort(key=values.__getitem__, reverse=descending)  # stable, also when reversed
    return frame.take(known + unknown)


def select_columns(frame: Frame, columns: Sequence[str] | None) -> Frame:
    if not columns:
        return frame
    unknown = [c for c in columns if c not in frame.column_names]
    if unknown:
        raise VitzooError(f"unknown column(s) {', '.join(unknown)}", column_hint(unknown[0], frame))
    return frame.select(columns)


# --- facets ----------------------------------------------------------------------

#: The option that sets each filter, to name it in messages.
FILTER_OPTIONS = {
    "arch": "--arch", "ds": "--ds", "aug": "--aug", "wd": "--wd", "do": "--do", "sd": "--sd",
    "adapt_ds": "--adapt-ds", "res": "--res", "adapt_lr": "--adapt-lr", "steps": "--steps",
    "collection": "--collection", "name": "--name", "where": "--where",
}


def distinct_counts(frame: Frame, column: str) -> Frame:
    """Each value of ``column`` with its number of rows, most rows first (ties: by value);
    unknown values are one entry (None) too, so the counts add up to the rows."""
    if column not in frame.column_names:
        raise VitzooError(f"--distinct: unknown column {column!r}",
                          column_hint(column, frame))
    counts: dict[Any, int] = {}
    for value in frame.column(column):
        key = None if _is_null(value) else value
        counts[key] = counts.get(key, 0) + 1
    order = sorted(counts, key=lambda v: (-counts[v], v is None, str(v) if v is not None else ""))
    return Frame({column: order, "rows": [counts[v] for v in order]})


def active_filters(filters: Filters) -> list[str]:
    """The names of the filters that constrain something."""
    return [key for key in FILTER_OPTIONS if getattr(filters, key)]


def without(filters: Filters, key: str) -> Filters:
    """The same filters with one of them dropped."""
    from dataclasses import replace

    return replace(filters, **{key: None if key == "where" else ()})


def describe_filter(filters: Filters, key: str) -> str:
    """``--res 384`` / ``--where 'x > 1'``: how the user wrote this filter."""
    value = getattr(filters, key)
    if key == "where":
        return f"--where {value!r}"
    return f"{FILTER_OPTIONS[key]} {','.join(f'{v:g}' if isinstance(v, float) else str(v) for v in value)}"
