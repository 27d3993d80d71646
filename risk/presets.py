"""Rule presets as data: the daily-reset convention a plan follows.

An operator applies one to a plan with the admin action "Apply a daily-reset preset"
on Plans or `manage.py risk_apply_preset <plan-slug> <preset>`; both go through
risk.services.plan_apply_rule_preset (audited, bumps the plan's ruleset_version so
challenges bought earlier keep the rule set they were sold with).

The "-like" presets copy the published reset convention of those firms, not their
whole rule book; the loss percentages stay whatever the plan says.
"""

from datetime import time

RULE_PRESETS: dict[str, dict] = {
    "tradesense": {
        "label": "TradeSense: reset at midnight UTC, anchored on the balance",
        "rules": {"daily_reset_tz": "UTC", "daily_reset_time": time(0, 0), "daily_anchor": "balance"},
    },
    "ftmo_like": {
        "label": "FTMO-like: reset at midnight Europe/Prague, anchored on the balance",
        "rules": {"daily_reset_tz": "Europe/Prague", "daily_reset_time": time(0, 0), "daily_anchor": "balance"},
    },
    "fivers_like": {
        "label": "5ers-like: reset at 17:00 America/New_York, anchored on the higher of balance and equity",
        "rules": {"daily_reset_tz": "America/New_York", "daily_reset_time": time(17, 0), "daily_anchor": "higher"},
    },
}
