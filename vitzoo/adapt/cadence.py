"""When periodic work is due: log, evaluate, checkpoint (big_vision's ``itstime``).

One rule for every period, so the loop reads as a list of questions instead of
arithmetic. A period of 0 means "never on the way" (only at the end, where asked).
"""

from __future__ import annotations


def itstime(step: int, every: int, total: int, *, last: bool = True) -> bool:
    """True every ``every`` steps; at ``step == total`` exactly when ``last``.

    ``last=False`` is for work the end does anyway (the final checkpoint is written with
    the exported model), so it is not done twice.
    """
    if step == total:
        return last
    return bool(every) and step % every == 0
