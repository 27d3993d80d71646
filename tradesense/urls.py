from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import BasePermission

from tradesense import health


class ApiDocsAccess(BasePermission):
    """The schema and Swagger UI: anyone when API_DOCS_PUBLIC (development), else staff only.

    Read per request, so the setting can change without a code path of its own."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        return settings.API_DOCS_PUBLIC or bool(user and user.is_active and user.is_staff)


api_v1 = [
    path("schema", SpectacularAPIView.as_view(permission_classes=[ApiDocsAccess]), name="schema"),
    # The split view serves Swagger UI's init script as a file (?script), not inline: the
    # Content-Security-Policy runs no inline script.
    path(
        "docs",
        SpectacularSwaggerSplitView.as_view(url_name="schema", permission_classes=[ApiDocsAccess]),
        name="docs",
    ),
    path("", include("challenges.urls")),
    path("", include("payments.urls")),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("admin/", admin.site.urls),
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("health/", health.full, name="health"),
    path("metrics", health.metrics, name="metrics"),
    path("", include("challenges.pages_urls")),
]

# Refusals before any view (no route matches, e.g. an id past bigint: tradesense.common.converters;
# Django's own 400s): API.md's error body under /api/, Django's pages elsewhere.
handler400 = "tradesense.common.errors.bad_request"
handler404 = "tradesense.common.errors.page_not_found"
