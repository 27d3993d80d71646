from django.urls import path  # noqa: F401

app_name = "payments"
# REST routes under /api/v1/ (API.md), added by the issue that builds this app.
urlpatterns = []
