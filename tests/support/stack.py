"""Seed a database that a separate server process uses, and read it back, over plain SQL."""

from __future__ import annotations

import json

import psycopg

from tests.support.processes import manage

SEED_SCRIPT = r"""
import json
from django.contrib.auth import get_user_model
from accounts.services import token_issue
from challenges.management.commands.seed_demo import seed_plans
from challenges.models import Plan
from challenges.services import challenge_activate
seed_plans()
User = get_user_model()
out = {"challenges": []}
user, _ = User.objects.get_or_create(username="loadtrader", defaults={"email": "l@example.com"})
out["token"] = token_issue(user=user)
staff, _ = User.objects.get_or_create(username="loadstaff", defaults={"email": "s@example.com", "is_staff": True})
# The tests move prices with this account: the challenges.set_price role (issue 11).
from django.contrib.auth.models import Permission
staff.user_permissions.add(Permission.objects.get(content_type__app_label="challenges", codename="set_price"))
out["staff_token"] = token_issue(user=staff)
for i in range(N_CHALLENGES):
    c = challenge_activate(trader=user, plan=Plan.objects.get(slug="elite"), source_ref=f"seed:{i}")
    out["challenges"].append(c.pk)
print("SEED" + json.dumps(out))
"""


def seed_trader(env: dict[str, str], n_challenges: int = 1) -> dict:
    manage(env, "migrate", "--noinput", "-v", "0")
    out = manage(env, "shell", "-c", SEED_SCRIPT.replace("N_CHALLENGES", str(n_challenges)))
    line = next(line for line in out.splitlines() if line.startswith("SEED"))
    return json.loads(line[4:])


def sql(database_url: str, query: str, *params):
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()
