"""Catalog speed: a cold ``vitzoo list`` against the reference pandas workflow, and the build.

Both sides run as fresh processes (cold start, as a user types them), interleaved
round by round on the same machine so load changes hit both equally:

* vitzoo:    vitzoo list --arch B/16 --aug medium1 --format csv --index DIR
* reference: python -c "pd.read_csv(index.csv).query('name == \"B/16\" and aug == \"medium1\"')"
             (what the reference notebook does), writing the same rows as CSV.

The 51,509-row index.csv is generated from the real filename grid with seeded
TEST metric values (tests/support/bucket_factory.py); only its size and shape matter here.
Results (medians and ratios) go to benchmarks/RESULTS.md, section "Catalog".
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.results import replace_section  # noqa: E402
from tests.support.bucket_factory import write_index_csv  # noqa: E402

PANDAS_QUERY = (
    "import sys, pandas as pd\n"
    "df = pd.read_csv(sys.argv[1])\n"
    "df.query('name == \"B/16\" and aug == \"medium1\"').to_csv(sys.stdout, index=False)\n"
)


def _vitzoo() -> list[str]:
    script = Path(sys.executable).with_name("vitzoo")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vitzoo"]


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, bytes]:
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, env=env, check=True)
    return time.perf_counter() - start, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--build-rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only, don't update RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        csv_path = write_index_csv(tmp_path / "index.csv")
        out = tmp_path / "catalog"
        env = {**os.environ, "VITZOO_HOME": str(tmp_path / "home")}

        build_cmd = [*_vitzoo(), "index", "build", "--source", str(csv_path), "--out", str(out),
                     "--force"]
        build_times = [_timed(build_cmd, env)[0] for _ in range(args.build_rounds)]

        list_cmd = [*_vitzoo(), "list", "--arch", "B/16", "--aug", "medium1", "--format", "csv",
                    "--index", str(out)]
        pandas_cmd = [sys.executable, "-c", PANDAS_QUERY, str(csv_path)]
        _timed(list_cmd, env), _timed(pandas_cmd, env)  # warm the OS file cache for both
        ours, theirs = [], []
        for _ in range(args.rounds):
            seconds, stdout = _timed(list_cmd, env)
            ours.append(seconds)
            ours_rows = stdout.count(b"\n") - 1
            seconds, stdout = _timed(pandas_cmd, env)
            theirs.append(seconds)
            their_rows = stdout.count(b"\n") - 1
        if ours_rows != their_rows:
            raise SystemExit(f"row counts differ: vitzoo {ours_rows}, pandas {their_rows}")

    med_list, med_pandas, med_build = (statistics.median(x) for x in (ours, theirs, build_times))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; `python benchmarks/catalog.py` "
        f"({args.rounds} interleaved rounds, cold processes; load average {load} at the end).",
        "",
        "| measurement | median | min | max |",
        "|---|---:|---:|---:|",
        f"| `vitzoo list --arch B/16 --aug medium1 --format csv` ({ours_rows} rows) | "
        f"{med_list:.3f} s | {min(ours):.3f} s | {max(ours):.3f} s |",
        f"| pandas `read_csv` + `.query` of the same 51,509-row index.csv | {med_pandas:.3f} s | "
        f"{min(theirs):.3f} s | {max(theirs):.3f} s |",
        f"| `vitzoo index build` from the 51,509-row CSV ({args.build_rounds} runs, --force) | "
        f"{med_build:.3f} s | {min(build_times):.3f} s | {max(build_times):.3f} s |",
        "",
        f"Ratio pandas / vitzoo list (medians): **{med_pandas / med_list:.2f}x** "
        f"(target >= 2x; list target < 0.35 s; build target < 5 s).",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        replace_section(REPO / "benchmarks" / "RESULTS.md", "Catalog", text)


if __name__ == "__main__":
    main()
