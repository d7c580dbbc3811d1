"""Filtering, sorting and aggregating the catalog with pyarrow.

The CLI and the pandas API share this code. ``--where`` takes a Python-like
expression (``adapt_final_val > 0.9 and ds == "i21k"``) that is parsed with
``ast`` and translated to pyarrow compute calls; nothing is ever ``eval``'d.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vitzoo.catalog.schema import COLUMN_NAMES, PRETRAINED_COLUMNS
from vitzoo.errors import VitzooError
from vitzoo.names import (
    ADAPT_DATASETS,
    AUGMENTATIONS,
    canonical_arch,
    canonical_pretrain_ds,
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
    where: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _listify(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str | int | float):
        return [value]
    return list(value)


def make_filters(**kwargs: Any) -> Filters:
    """Build :class:`Filters` from keyword arguments, accepting scalars or lists."""
    known = {f for f in Filters.__dataclass_fields__ if f not in ("where", "extra")}
    unknown = set(kwargs) - known - {"where"}
    if unknown:
        raise VitzooError(f"unknown filter(s) {', '.join(sorted(unknown))}",
                          f"valid filters: {', '.join(sorted(known | {'where'}))}")
    values = {k: _listify(v) for k, v in kwargs.items() if k in known}
    return Filters(**values, where=kwargs.get("where"))


def _choice(value: str, choices: Iterable[str], what: str) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise VitzooError(f"unknown {what} {value!r}", f"valid choices: {', '.join(choices)}")
    return value


def _isin(table: pa.Table, column: str, values: list, type_: pa.DataType) -> pa.ChunkedArray:
    return pc.is_in(table.column(column), value_set=pa.array(values, type_))


def _float_isin(table: pa.Table, column: str, values: list[float]) -> pa.ChunkedArray:
    # Float columns hold values like 0.03; compare with a tolerance, not bit equality.
    col = table.column(column)
    mask = None
    for value in values:
        close = pc.less_equal(pc.abs(pc.subtract(col, float(value))), 1e-9)
        mask = close if mask is None else pc.or_(mask, close)
    return mask


def filter_mask(table: pa.Table, filters: Filters) -> pa.ChunkedArray | None:
    """A boolean mask for the rows that pass every filter (None: keep everything)."""
    masks = []
    if filters.arch:
        masks.append(_isin(table, "name", [canonical_arch(a) for a in filters.arch], pa.string()))
    if filters.ds:
        masks.append(_isin(table, "ds", [canonical_pretrain_ds(d) for d in filters.ds], pa.string()))
    if filters.aug:
        augs = [_choice(a, AUGMENTATIONS, "augmentation") for a in filters.aug]
        masks.append(_isin(table, "aug", augs, pa.string()))
    for column, values in (("wd", filters.wd), ("do", filters.do), ("sd", filters.sd),
                           ("adapt_lr", filters.adapt_lr)):
        if values:
            masks.append(_float_isin(table, column, values))
    if filters.adapt_ds:
        known = set(ADAPT_DATASETS) | set(
            pc.unique(table.column("adapt_ds")).drop_null().to_pylist()
        )
        values = [_choice(d, sorted(known), "fine-tuning dataset") for d in filters.adapt_ds]
        masks.append(_isin(table, "adapt_ds", values, pa.string()))
    if filters.res:
        masks.append(_isin(table, "adapt_resolution", [int(r) for r in filters.res], pa.int64()))
    if filters.steps:
        masks.append(_isin(table, "adapt_steps", [int(s) for s in filters.steps], pa.int64()))
    if filters.collection:
        known = pc.unique(table.column("collection")).drop_null().to_pylist()
        values = [_choice(c, known, "collection") for c in filters.collection]
        masks.append(_isin(table, "collection", values, pa.string()))
    for column, value in filters.extra.items():
        masks.append(pc.equal(table.column(column), value))
    if filters.where:
        masks.append(compile_where(filters.where, table))
    if not masks:
        return None
    mask = masks[0]
    for other in masks[1:]:
        mask = pc.and_(mask, other)
    return pc.fill_null(mask, False)


def apply_filters(table: pa.Table, filters: Filters) -> pa.Table:
    mask = filter_mask(table, filters)
    return table if mask is None else table.filter(mask)


# --- --where -------------------------------------------------------------------

_COMPARE: dict[type, Callable] = {
    ast.Eq: pc.equal, ast.NotEq: pc.not_equal, ast.Lt: pc.less, ast.LtE: pc.less_equal,
    ast.Gt: pc.greater, ast.GtE: pc.greater_equal,
}
_ARITH: dict[type, Callable] = {
    ast.Add: pc.add, ast.Sub: pc.subtract, ast.Mult: pc.multiply, ast.Div: pc.divide,
}
_FUNCS: dict[str, Callable] = {
    "isnull": pc.is_null, "notnull": pc.is_valid, "abs": pc.abs,
}


def compile_where(expression: str, table: pa.Table) -> pa.ChunkedArray:
    """Evaluate a ``--where`` expression to a boolean mask over ``table``."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise VitzooError(f"cannot parse --where {expression!r}: {exc.msg}",
                          'write it like: adapt_final_val > 0.9 and ds == "i21k"') from exc
    try:
        result = _eval(tree.body, table, expression)
    except pa.ArrowException as exc:
        raise VitzooError(f"--where {expression!r} compares incompatible values: "
                          f"{str(exc).splitlines()[0]}", "quote strings and compare numbers "
                          "with numeric columns") from exc
    if not isinstance(result, pa.ChunkedArray | pa.Array) or not pa.types.is_boolean(result.type):
        raise VitzooError(f"--where {expression!r} is not a condition",
                          "use a comparison such as final_val > 0.5")
    return result


def _eval(node: ast.AST, table: pa.Table, expression: str) -> Any:
    if isinstance(node, ast.BoolOp):
        combine = pc.and_kleene if isinstance(node.op, ast.And) else pc.or_kleene
        values = [_eval(v, table, expression) for v in node.values]
        result = values[0]
        for value in values[1:]:
            result = combine(result, value)
        return result
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, table, expression)
        if isinstance(node.op, ast.Not | ast.Invert):
            return pc.invert(operand)
        if isinstance(node.op, ast.USub):
            return pc.negate(operand) if isinstance(operand, pa.ChunkedArray) else -operand
    if isinstance(node, ast.Compare):
        left = _eval(node.left, table, expression)
        result = None
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, table, expression)
            if isinstance(op, ast.In | ast.NotIn):
                if not isinstance(right, list):
                    raise VitzooError(f"--where {expression!r}: 'in' needs a list like [1, 2]",
                                      'e.g. aug in ["none", "light1"]')
                part = pc.is_in(left, value_set=pa.array(right))
                part = pc.invert(part) if isinstance(op, ast.NotIn) else part
            elif type(op) in _COMPARE:
                part = _COMPARE[type(op)](left, right)
            else:
                raise VitzooError(f"--where {expression!r}: unsupported comparison",
                                  "use ==, !=, <, <=, >, >=, in, not in")
            result = part if result is None else pc.and_kleene(result, part)
            left = right
        return result
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.BitAnd | ast.BitOr):
            combine = pc.and_kleene if isinstance(node.op, ast.BitAnd) else pc.or_kleene
            return combine(_eval(node.left, table, expression), _eval(node.right, table, expression))
        if type(node.op) in _ARITH:
            return _ARITH[type(node.op)](_eval(node.left, table, expression),
                                         _eval(node.right, table, expression))
    if isinstance(node, ast.Name):
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        if node.id not in table.column_names:
            raise VitzooError(f"--where {expression!r}: unknown column {node.id!r}",
                              f"columns are: {', '.join(table.column_names)}")
        return table.column(node.id)
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool):
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        return [_eval(e, table, expression) for e in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
        if len(node.args) != 1:
            raise VitzooError(f"--where {expression!r}: {node.func.id}() takes one column",
                              "e.g. notnull(final_val)")
        return _FUNCS[node.func.id](_eval(node.args[0], table, expression))
    raise VitzooError(f"--where {expression!r}: unsupported syntax "
                      f"{ast.get_source_segment(expression, node) or type(node).__name__!r}",
                      "use column names, numbers, quoted strings, and/or/not, comparisons, "
                      "in [...], isnull(col), notnull(col)")


# --- shaping -------------------------------------------------------------------

def pretrained_view(table: pa.Table) -> pa.Table:
    """One row per pre-trained checkpoint, with how many of its fine-tunes are listed."""
    columns = [c for c in PRETRAINED_COLUMNS if c in table.column_names]
    keyed = table.append_column("_key", pc.coalesce(table.column("url"), table.column("checkpoint")))
    grouped = keyed.group_by("_key", use_threads=False).aggregate(
        [(c, "first") for c in columns if c != "_key"] + [("adapt_filename", "count")]
    )
    renamed = {f"{c}_first": c for c in columns}
    renamed["adapt_filename_count"] = "finetunes"
    grouped = grouped.rename_columns([renamed.get(n, n) for n in grouped.column_names])
    return grouped.select([*columns, "finetunes"])


def sort_table(table: pa.Table, column: str | None, descending: bool) -> pa.Table:
    if not column:
        return table
    if column not in table.column_names:
        raise VitzooError(f"cannot sort by unknown column {column!r}",
                          f"columns are: {', '.join(table.column_names)}")
    order = "descending" if descending else "ascending"
    return table.sort_by([(column, order, "at_end")])


def select_columns(table: pa.Table, columns: Sequence[str] | None) -> pa.Table:
    if not columns:
        return table
    unknown = [c for c in columns if c not in table.column_names]
    if unknown:
        valid = table.column_names if table.column_names != list(COLUMN_NAMES) else COLUMN_NAMES
        raise VitzooError(f"unknown column(s) {', '.join(unknown)}",
                          f"columns are: {', '.join(valid)}")
    return table.select(list(columns))

