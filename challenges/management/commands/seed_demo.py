"""Seed the demo data: the three TradeSense plans, a demo trader and a staff user.

Idempotent: running it again changes nothing an operator has edited.
"""

from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from challenges.catalogue import install_catalogue
from challenges.models import Instrument, Plan, PriceTick

PLANS = [
    {"slug": "starter", "name": "Starter", "price": Decimal("200.00"), "starting_balance": Decimal("5000.00"), "sort_order": 1},
    {"slug": "pro", "name": "Pro", "price": Decimal("500.00"), "starting_balance": Decimal("15000.00"), "sort_order": 2},
    {"slug": "elite", "name": "Elite", "price": Decimal("1000.00"), "starting_balance": Decimal("50000.00"), "sort_order": 3},
]
COMMON_RULES = {
    "currency": "MAD",
    "account_currency": "USD",
    "max_daily_loss_pct": Decimal("5"),
    "max_total_loss_pct": Decimal("10"),
    "profit_target_pct": Decimal("10"),
}


def seed_plans() -> list[Plan]:
    plans = []
    for spec in PLANS:
        plan, _ = Plan.objects.get_or_create(slug=spec["slug"], defaults={**COMMON_RULES, **spec})
        plans.append(plan)
    return plans


class Command(BaseCommand):
    help = "Create the demo plans, the demo trader (demo/demo-pass-123) and the staff user (admin/admin-pass-123)."

    @transaction.atomic
    def handle(self, *args, **options):
        if settings.PRODUCTION:
            # Its passwords are printed in the README: never on a production stack.
            raise CommandError(
                "seed_demo creates users with published passwords and refuses to run with DEBUG off; "
                "production gets its plans from `seed_catalogue` and its first operator from `createsuperuser`."
            )
        seed_plans()
        install_catalogue(Instrument=Instrument, PriceTick=PriceTick)  # after a flush, say
        User = get_user_model()
        if not User.objects.filter(username="demo").exists():
            User.objects.create_user("demo", "demo@tradesense.local", "demo-pass-123")
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@tradesense.local", "admin-pass-123")
        self.stdout.write("Seeded plans starter, pro, elite; users demo and admin.")
