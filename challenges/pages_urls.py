from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.i18n import JavaScriptCatalog, set_language

from accounts.limits import signup_limited
from challenges import pages
from tradesense.common import converters  # noqa: F401 (registers <id:...>)

app_name = "pages"
# The trader dashboard's pages (API.md "Pages"); tradesense/urls.py includes them at the root.
urlpatterns = [
    path("", pages.home_page, name="home"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="registration/login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Failed logins are limited by django-axes inside authenticate() (accounts.limits);
    # accounts created per address by the same database counter as POST /auth/register.
    path("signup/", signup_limited(pages.signup_page), name="signup"),
    path("plans/", pages.plans_page, name="plans"),
    path("challenges/<id:challenge_id>/", pages.challenge_page, name="challenge"),
    path("leaderboard/", pages.leaderboard_page, name="leaderboard"),
    # The dashboard's JavaScript strings, translated like the templates' (gettext in JS).
    path("jsi18n/", JavaScriptCatalog.as_view(packages=["challenges"]), name="javascript-catalog"),
    path("i18n/setlang/", set_language, name="set_language"),
]
