"""REST routes under /api/v1/ (API.md); no trailing slashes."""

from django.urls import path

from challenges import api
from tradesense.common import converters  # noqa: F401 (registers <id:...>)

app_name = "challenges"

urlpatterns = [
    path("auth/register", api.RegisterApi.as_view(), name="register"),
    path("auth/token", api.TokenApi.as_view(), name="token"),
    path("auth/password", api.PasswordChangeApi.as_view(), name="password"),
    path("auth/tokens", api.TokenListApi.as_view(), name="tokens"),
    path("auth/tokens/<id:token_id>", api.TokenRevokeApi.as_view(), name="token-revoke"),
    path("auth/ws-ticket", api.WsTicketApi.as_view(), name="ws-ticket"),
    path("plans", api.PlanListApi.as_view(), name="plans"),
    path("challenges", api.ChallengeListApi.as_view(), name="challenges"),
    path("challenges/<id:challenge_id>", api.ChallengeDetailApi.as_view(), name="challenge"),
    path("challenges/<id:challenge_id>/orders", api.OrderListCreateApi.as_view(), name="orders"),
    path(
        "challenges/<id:challenge_id>/orders/by_client_order_id/<str:client_order_id>",
        api.OrderByClientOrderIdApi.as_view(),
        name="order-by-client-id",
    ),
    path("challenges/<id:challenge_id>/positions", api.PositionListApi.as_view(), name="positions"),
    path("challenges/<id:challenge_id>/positions/<str:symbol>", api.PositionCloseApi.as_view(), name="position"),
    path("challenges/<id:challenge_id>/portfolio/history", api.PortfolioHistoryApi.as_view(), name="portfolio-history"),
    path("market/prices", api.MarketPriceListApi.as_view(), name="market-prices"),
    path("market/prices/<str:symbol>", api.MarketPriceApi.as_view(), name="market-price"),
    path("leaderboard", api.LeaderboardApi.as_view(), name="leaderboard"),
]
