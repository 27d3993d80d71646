"""Install the instrument catalogue (challenges/catalogue.py); operators may retune rows."""

from django.db import migrations


def add_catalogue(apps, schema_editor):
    from challenges.catalogue import install_catalogue

    install_catalogue(Instrument=apps.get_model("challenges", "Instrument"), PriceTick=apps.get_model("challenges", "PriceTick"))


def remove_catalogue(apps, schema_editor):
    from challenges.catalogue import CATALOGUE

    Instrument = apps.get_model("challenges", "Instrument")
    Instrument.objects.filter(symbol__in=[row[0] for row in CATALOGUE]).delete()


class Migration(migrations.Migration):
    dependencies = [("challenges", "0002_challenge_day_start_balance_and_more")]

    operations = [migrations.RunPython(add_catalogue, remove_catalogue)]
