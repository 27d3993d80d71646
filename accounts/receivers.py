"""Revoke a user's tokens when their password changes or the account is deactivated.

Why a receiver (the project otherwise calls services explicitly): the user row is
written by code we do not own (Django's admin user and password forms, `changepassword`,
any `set_password()` + `save()`), and the one place every such write passes is the
model's save. The revocation itself is a service (accounts.services.tokens_revoke_all)
with its audit event, in the transaction of the save when there is one.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models.signals import post_save, pre_save

_WATCHED = {"password", "is_active"}


def _remember_credentials(sender, instance, raw=False, update_fields=None, **kwargs):
    if raw or instance.pk is None:
        return
    if update_fields is not None and not _WATCHED & set(update_fields):
        return  # e.g. login()'s last_login update: nothing to compare, no query
    instance._credentials_before = sender._default_manager.filter(pk=instance.pk).values("password", "is_active").first()


def _revoke_on_change(sender, instance, created, raw=False, **kwargs):
    from accounts.services import tokens_revoke_all

    before = instance.__dict__.pop("_credentials_before", None)
    if created or raw or before is None:
        return
    if before["password"] != instance.password:
        tokens_revoke_all(user=instance, reason="password changed")
    elif before["is_active"] and not instance.is_active:
        tokens_revoke_all(user=instance, reason="account deactivated")


def connect() -> None:
    user_model = get_user_model()
    pre_save.connect(_remember_credentials, sender=user_model, dispatch_uid="accounts.remember_credentials")
    post_save.connect(_revoke_on_change, sender=user_model, dispatch_uid="accounts.revoke_on_change")
