from django.apps import AppConfig


class ChallengesConfig(AppConfig):
    name = "challenges"
    verbose_name = "Challenges and trading"

    def ready(self):
        # Every process (web, worker, management commands) drops the cached plan list and
        # instrument terms when a plan or instrument is written, whoever writes it.
        from challenges.catalogue import connect_cache_invalidation

        connect_cache_invalidation()
