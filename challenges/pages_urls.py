from django.urls import path  # noqa: F401

app_name = "pages"
# The trader dashboard's pages (/, /login/, /plans/, /challenges/<id>/ ...), built by the
# live-updates and dashboard issue.
urlpatterns = []
