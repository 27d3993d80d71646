from django.urls import path

from payments import api
from tradesense.common import converters  # noqa: F401 (registers <id:...>)

app_name = "payments"
# REST routes under /api/v1/ (API.md).
urlpatterns = [
    path("purchases", api.PurchasesApi.as_view(), name="purchases"),
    path("purchases/<id:purchase_id>", api.PurchaseDetailApi.as_view(), name="purchase-detail"),
    path("payments/webhook", api.PaymentWebhookApi.as_view(), name="webhook"),
]
