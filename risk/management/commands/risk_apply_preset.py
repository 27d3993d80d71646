"""Apply a daily-reset preset (risk/presets.py) to a plan: `manage.py risk_apply_preset pro ftmo_like`."""

from django.core.management.base import BaseCommand, CommandError

from challenges.models import Plan
from risk.presets import RULE_PRESETS
from risk.services import plan_apply_rule_preset


class Command(BaseCommand):
    help = "Apply a rule preset to a plan (audited; bumps the plan's ruleset_version)."

    def add_arguments(self, parser):
        parser.add_argument("plan", help="plan slug")
        parser.add_argument("preset", choices=sorted(RULE_PRESETS))

    def handle(self, *args, plan, preset, **options):
        try:
            plan_obj = Plan.objects.get(slug=plan)
        except Plan.DoesNotExist:
            raise CommandError(f"No plan with slug {plan!r}.") from None
        before = plan_obj.ruleset_version
        plan_obj = plan_apply_rule_preset(plan=plan_obj, preset=preset, actor_label="system:manage.py")
        if plan_obj.ruleset_version == before:
            self.stdout.write(f"{plan}: already on preset {preset} (ruleset v{before}).")
        else:
            self.stdout.write(
                f"{plan}: preset {preset} applied ({RULE_PRESETS[preset]['label']}); ruleset v{plan_obj.ruleset_version}."
            )
