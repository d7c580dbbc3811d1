"""What a run leaves behind: its ``run.json``, its weights and its local-catalog entry.

:mod:`.record` owns ``run.json`` (one versioned schema for fine-tunes, head-only runs and
probes) and ``run.log``; :mod:`.registry` writes ``final.npz`` and registers runs and probe
results in ``VITZOO_HOME/local_runs.json`` under a lock. JSON files are written by
:func:`vitzoo.atomic.write_json` (re-exported here), the one JSON writer of the package.
"""

from __future__ import annotations

from vitzoo.atomic import write_json

__all__ = ["write_json"]
