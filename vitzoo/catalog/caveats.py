"""The catalog's ``caveats`` column: stable codes that mark values to read with care.

A value can be real and still mislead when shown bare in a table: a throughput that
belongs to the architecture, not the file; a filename spelling nobody has seen; an
accuracy a README only "expected". Each row's ``caveats`` is a comma-separated list
of the codes below (empty when none apply), so tables can footnote them, CSV/JSON
carry them, and a script can filter on them (``--where "caveats == ''"``). The
codes never change meaning; the README's legend is checked against this table.
"""

from __future__ import annotations

from collections.abc import Iterable

#: code -> what it means (one line; the README legend repeats these).
CAVEATS: dict[str, str] = {
    "unconfirmed_name": "the filename spelling is reconstructed (i21k_30 rows) and no source confirms it",
    "b8_candidate": "a B/8 grid configuration not known to be released (only 3 of 28 were; 2 are known)",
    "possibly_missing": "one of the 756 imagenet2012 fine-tunes at 384 px with lr 0.03 was never "
                        "released and it is not known which; this row may be that one",
    "per_arch_throughput": "infer_samples_per_sec is paper Table 3's figure for the architecture "
                           "and resolution, not a measurement of this file",
    "expected_value": "the accuracy is what the reference README says the file is "
                      "\"expected to achieve\", not a measured table entry",
    "res224_figure": "a published ImageNet top-1 for this row's pre-trained checkpoint "
                     "(paper Table 3) was measured at 224 px; this file is fine-tuned at 384 px",
}

#: code -> the catalog columns whose values it qualifies, so a table marks those values and a
#: plot the points placed by them. ``checkpoint`` stands for the file itself (its name, whether
#: it exists); ``res224_figure`` qualifies a published fact that ``vitzoo show`` lists, no column.
QUALIFIES: dict[str, tuple[str, ...]] = {
    "unconfirmed_name": ("checkpoint", "filename", "adapt_filename", "url", "adapt_url"),
    "b8_candidate": ("checkpoint", "filename", "adapt_filename", "url", "adapt_url"),
    "possibly_missing": ("checkpoint", "adapt_filename", "adapt_url", "exists"),
    "per_arch_throughput": ("infer_samples_per_sec",),
    "expected_value": ("adapt_final_test",),
    "res224_figure": (),
}

SEPARATOR = ","


def add_caveat(row: dict, code: str) -> None:
    """Append ``code`` to the row's caveats once, keeping the order they were found in."""
    if code not in CAVEATS:
        raise ValueError(f"unknown caveat code {code!r}; known: {', '.join(CAVEATS)}")
    codes = split_caveats(row.get("caveats"))
    if code not in codes:
        row["caveats"] = SEPARATOR.join([*codes, code])


def split_caveats(value: str | None) -> list[str]:
    """The codes of one ``caveats`` cell (``None`` and ``""`` are no caveats)."""
    return [c for c in (value or "").split(SEPARATOR) if c]


def codes_for(value: str | None, column: str) -> list[str]:
    """The codes of one ``caveats`` cell that qualify ``column``'s value."""
    return [c for c in split_caveats(value) if column in QUALIFIES.get(c, ())]


def pretrained_caveats(value: str | None) -> str:
    """The codes of a fine-tune's row that hold for its pre-trained file too (its name, not the
    fine-tune's results), for the one-row-per-pre-trained-checkpoint view."""
    return SEPARATOR.join(c for c in split_caveats(value) if "filename" in QUALIFIES.get(c, ()))


def legend(codes: Iterable[str]) -> list[str]:
    """``code: meaning`` lines for the codes that occur, in the table's order."""
    seen = dict.fromkeys(c for c in codes if c in CAVEATS)
    return [f"{code}: {CAVEATS[code]}" for code in seen]
