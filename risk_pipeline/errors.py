"""Domain errors of the Dagster-free layers (queries, valuation, pre-trade service).

Assets turn them into ``dagster.Failure`` (see ``defs.common.fail_closed``); the pre-trade service turns
them into a rejected order with the message as the reason.
"""

from __future__ import annotations


class RiskDataError(Exception):
    """An input the computation needs is missing, stale or inconsistent: the computation fails closed."""
