"""Install the product catalogue a production stack needs: the plans and the instruments.

Idempotent (an operator's edits to a plan are kept) and creates no users: production's
one-shot migrate step runs it (`make prod`, compose's `migrate`); the first operator
comes from `createsuperuser`.
"""

from django.core.management.base import BaseCommand
from django.db import transaction

from challenges.catalogue import install_catalogue
from challenges.management.commands.seed_demo import seed_plans
from challenges.models import Instrument, PriceTick


class Command(BaseCommand):
    help = "Create the plans and instruments if missing; no users."

    @transaction.atomic
    def handle(self, *args, **options):
        plans = seed_plans()
        install_catalogue(Instrument=Instrument, PriceTick=PriceTick)
        self.stdout.write(f"Catalogue: plans {', '.join(p.slug for p in plans)}; {Instrument.objects.count()} instruments.")
