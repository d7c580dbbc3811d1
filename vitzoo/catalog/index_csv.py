"""Source (b): the bucket's real ``index.csv``, validated before it is trusted.

The CSV comes from outside (a bucket, a mirror, a user's copy), so every row is
checked against the schema and the filename grammar before it can override the
reconstructed catalog: column names and types, accuracies in [0, 1], known
resolutions, safe filenames, and filenames that agree with the hyper-parameter
columns. Validation is vectorised with pyarrow and parses each distinct
pre-trained name and adaptation suffix once, so 51,509 rows take well under a second.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from vitzoo.catalog.schema import ACCURACY_COLUMNS, INDEX_CSV_COLUMNS, INDEX_CSV_NAMES
from vitzoo.errors import VitzooError
from vitzoo.names import RESOLUTIONS, parse_adaptation, parse_pretrained

_NUMERIC = r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$"
_NULLS = ["", "nan", "NaN", "NULL", "null", "None"]


def _fail(url: str, problem: str, hint: str) -> VitzooError:
    return VitzooError(f"{url}: {problem}", hint)


def _line(index: int) -> str:
    """Human row reference: data row N is line N+1 of the file (line 1 is the header)."""
    return f"row {index + 1} (line {index + 2})"


def read_index_csv(data: bytes, url: str) -> pa.Table:
    """Parse and validate index.csv bytes into a table with the 21 typed columns."""
    if not data.strip():
        raise _fail(url, "the file is empty", "check the URL or download the file again")
    if data.lstrip()[:1] == b"<":
        raise _fail(url, "this is an HTML/XML page, not a CSV (probably an error page)",
                    "check the URL or your access to it")
    try:
        raw = pacsv.read_csv(
            io.BytesIO(data),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in INDEX_CSV_NAMES},
                strings_can_be_null=True,
                null_values=_NULLS,
            ),
        )
    except pa.ArrowInvalid as exc:
        detail = str(exc).splitlines()[0]
        raise _fail(url, f"malformed or truncated CSV ({detail})",
                    "download the file again; a partial copy cannot be indexed") from exc
    missing = [n for n in INDEX_CSV_NAMES if n not in raw.column_names]
    if missing:
        raise _fail(url, f"missing columns {', '.join(missing)}",
                    f"an AugReg index.csv has the columns {', '.join(INDEX_CSV_NAMES)}")
    if raw.num_rows == 0:
        raise _fail(url, "the CSV has a header but no rows", "download the file again")
    arrow_types = {"str": pa.string(), "float": pa.float64(), "int": pa.int64()}
    table = pa.table({c.name: _convert(raw, c.name, arrow_types[c.type], url)
                      for c in INDEX_CSV_COLUMNS})
    _check_ranges(table, url)
    _check_names(table, url)
    return table


def _convert(raw: pa.Table, name: str, type_: pa.DataType, url: str) -> pa.Array:
    column = raw.column(name)
    if pa.types.is_string(type_):
        return column
    bad = pc.and_(pc.is_valid(column), pc.invert(pc.match_substring_regex(column, _NUMERIC)))
    if pc.any(bad).as_py():
        index = pc.index(bad, True).as_py()
        raise _fail(url, f"{_line(index)}: column {name!r} has the non-numeric value "
                    f"{column[index].as_py()!r}", "fix or re-download the CSV")
    as_float = pc.cast(pc.utf8_trim_whitespace(column), pa.float64())
    if pa.types.is_integer(type_):
        fractional = pc.and_(pc.is_valid(as_float), pc.not_equal(pc.floor(as_float), as_float))
        if pc.any(fractional).as_py():
            index = pc.index(fractional, True).as_py()
            raise _fail(url, f"{_line(index)}: column {name!r} must be a whole number, got "
                        f"{column[index].as_py()!r}", "fix or re-download the CSV")
        return pc.cast(as_float, type_)
    return as_float


def _first(mask: pa.ChunkedArray | pa.Array) -> int | None:
    mask = pc.fill_null(mask, False)
    return pc.index(mask, True).as_py() if pc.any(mask).as_py() else None


def _check_ranges(table: pa.Table, url: str) -> None:
    for name in (c for c in ACCURACY_COLUMNS if c in INDEX_CSV_NAMES):
        column = table.column(name)
        index = _first(pc.or_(pc.less(column, 0.0), pc.greater(column, 1.0)))
        if index is not None:
            raise _fail(url, f"{_line(index)}: {name}={column[index].as_py()} is not an accuracy "
                        "in [0, 1]", "accuracies in index.csv are fractions; fix the file")
    res = table.column("adapt_resolution")
    index = _first(pc.invert(pc.is_in(res, pa.array(RESOLUTIONS, pa.int64()))))
    if index is not None:
        raise _fail(url, f"{_line(index)}: unknown adapt_resolution {res[index].as_py()}",
                    f"AugReg fine-tunes use {', '.join(map(str, RESOLUTIONS))}")


def _check_names(table: pa.Table, url: str) -> None:
    for name in ("filename", "adapt_filename"):
        column = table.column(name)
        index = _first(pc.is_null(column))
        if index is not None:
            raise _fail(url, f"{_line(index)}: {name} is empty", "every row needs both filenames")
        unsafe = pc.or_(pc.match_substring(column, "/"), pc.match_substring(column, ".."))
        unsafe = pc.or_(unsafe, pc.match_substring(column, "\\"))
        index = _first(unsafe)
        if index is not None:
            raise _fail(url, f"{_line(index)}: unsafe {name} {column[index].as_py()!r} "
                        "(contains '/' or '..')",
                        "refusing to index a file that could escape the cache folder; "
                        "use a trusted copy of index.csv")
    suffix = pc.struct_field(
        pc.extract_regex(table.column("adapt_filename"), r"^.*?--(?P<s>.*)$"), "s"
    )
    index = _first(pc.is_null(suffix))
    if index is not None:
        raise _fail(url, f"{_line(index)}: adapt_filename "
                    f"{table.column('adapt_filename')[index].as_py()!r} has no '--' adaptation part",
                    "fine-tuned names look like <pretrained>--<dataset>-steps_<k>k-lr_<lr>-res_<res>")
    joined = pc.binary_join_element_wise(table.column("filename"), suffix, "--")
    index = _first(pc.not_equal(joined, table.column("adapt_filename")))
    if index is not None:
        raise _fail(url, f"{_line(index)}: adapt_filename does not start with its filename "
                    f"{table.column('filename')[index].as_py()!r}", "fix or re-download the CSV")
    _check_distinct(table, url, ["filename", "name", "ds", "epochs", "lr", "aug", "wd", "do", "sd"],
                    _pretrained_matches)
    with_suffix = table.append_column("_suffix", suffix)
    _check_distinct(with_suffix, url, ["_suffix", "adapt_ds", "adapt_steps", "adapt_lr",
                                       "adapt_resolution"], _adaptation_matches)


def _check_distinct(table: pa.Table, url: str, columns: list[str], check) -> None:
    """Run ``check`` once per distinct combination; report the first row that has it."""
    distinct = table.select(columns).group_by(columns, use_threads=False).aggregate([])
    for combo in distinct.to_pylist():
        problem = check(combo)
        if problem:
            mask = None
            for key, value in combo.items():
                eq = pc.is_null(table.column(key)) if value is None else pc.equal(
                    table.column(key), pa.scalar(value, table.schema.field(key).type))
                mask = eq if mask is None else pc.and_(mask, eq)
            index = _first(mask)
            raise _fail(url, f"{_line(index)}: {problem}", "fix or re-download the CSV")


def _pretrained_matches(row: dict) -> str | None:
    try:
        parsed = parse_pretrained(row["filename"])
    except VitzooError as exc:
        return exc.message
    expected = {"name": parsed.arch, "ds": parsed.ds, "epochs": parsed.epochs, "lr": parsed.lr,
                "aug": parsed.aug, "wd": parsed.wd, "do": parsed.do, "sd": parsed.sd}
    wrong = [f"{k}={row[k]!r} (filename says {v!r})" for k, v in expected.items() if row[k] != v]
    return f"filename {row['filename']!r} disagrees with " + ", ".join(wrong) if wrong else None


def _adaptation_matches(row: dict) -> str | None:
    try:
        adapt_ds, steps, lr, res = parse_adaptation(row["_suffix"])
    except VitzooError as exc:
        return exc.message
    expected = {"adapt_ds": adapt_ds, "adapt_steps": steps, "adapt_lr": lr, "adapt_resolution": res}
    wrong = [f"{k}={row[k]!r} (filename says {v!r})" for k, v in expected.items() if row[k] != v]
    return f"adaptation {row['_suffix']!r} disagrees with " + ", ".join(wrong) if wrong else None
