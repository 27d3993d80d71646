"""Move the plaintext DRF tokens (rest_framework.authtoken, no longer installed) into
hashed ApiToken rows, then drop their table; and scrub the Idempotency-Key fingerprints
of anonymous requests (registrations), which were unsalted SHA-256 hashes of bodies that
held a password.

A bot keeps its token: the same secret now matches its digest, valid for API_TOKEN_TTL
from this migration. A registration replayed with a key recorded before this migration
answers 422 idempotency_key_reused instead of its first answer (the fingerprint is gone).
"""

import hashlib

from django.conf import settings
from django.db import migrations
from django.utils import timezone

LEGACY_TABLE = "authtoken_token"


def hash_legacy_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if LEGACY_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("accounts", "ApiToken")
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT "key", "user_id", "created" FROM "{LEGACY_TABLE}"')
        rows = cursor.fetchall()
    ApiToken.objects.bulk_create(
        [
            ApiToken(
                user_id=user_id, digest=hashlib.sha256(key.encode()).hexdigest(),
                created_at=created or now, expires_at=now + settings.API_TOKEN_TTL,
            )
            for key, user_id, created in rows
        ],
        ignore_conflicts=True,
    )
    schema_editor.execute(schema_editor.sql_delete_table % {"table": schema_editor.quote_name(LEGACY_TABLE)})


def scrub_anonymous_fingerprints(apps, schema_editor):
    IdempotencyRecord = apps.get_model("common", "IdempotencyRecord")
    IdempotencyRecord.objects.filter(scope="anon").update(fingerprint="scrubbed")


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("common", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(hash_legacy_tokens, migrations.RunPython.noop),
        migrations.RunPython(scrub_anonymous_fingerprints, migrations.RunPython.noop),
    ]
