"""REST endpoints for purchases and the processor's webhook (API.md). Thin: parse,
authorize, call a service or a selector, serialize."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from payments import selectors, services
from payments.models import Purchase
from tradesense.common import parsing
from tradesense.common.errors import NotFound
from tradesense.common.idempotency import idempotent
from tradesense.common.parsers import json_loads_strict
from tradesense.common.serializers import StrictSerializer

MAX_LIMIT = 500


class PurchaseOutputSerializer(serializers.Serializer):
    """A purchase as the trader sees it (API.md), plus attempts and next_attempt_at."""

    id = serializers.IntegerField()
    plan = serializers.CharField(source="plan.slug")
    amount = serializers.DecimalField(max_digits=20, decimal_places=2)
    currency = serializers.CharField()
    payment_method = serializers.CharField()
    status = serializers.CharField()
    challenge = serializers.IntegerField(source="challenge_id", allow_null=True)
    failure_reason = serializers.CharField()
    attempts = serializers.IntegerField(source="attempt_count", default=0)
    next_attempt_at = serializers.DateTimeField(allow_null=True, default=None)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


def _display(purchase: Purchase) -> dict:
    return PurchaseOutputSerializer(purchase).data


PurchasePage = inline_serializer(
    "PurchasePage", {"results": PurchaseOutputSerializer(many=True), "next": serializers.URLField(allow_null=True)}
)


class PurchasesApi(APIView):
    """GET /purchases: the trader's purchases. POST /purchases: buy a plan (202)."""

    @extend_schema_serializer(component_name="PurchaseCreateInput")
    class InputSerializer(StrictSerializer):
        plan = serializers.CharField(max_length=50)
        payment_method = serializers.ChoiceField(choices=Purchase.PaymentMethod.choices)
        payment_token = serializers.RegexField(
            r"^[A-Za-z0-9_\-]{3,128}$",
            max_length=128,
            error_messages={"invalid": "A processor token: 3 to 128 letters, digits, '_' or '-' (e.g. tok_visa)."},
        )

    @extend_schema(
        operation_id="purchases_list",
        parameters=[OpenApiParameter("limit", int), OpenApiParameter("before", int)],
        responses={200: PurchasePage},
    )
    def get(self, request):
        params = request.query_params
        limit = parsing.parse_int(params.get("limit", "50"), name="limit", minimum=1, maximum=MAX_LIMIT)
        before = parsing.parse_optional_id(params.get("before"), name="before")
        page = list(selectors.purchase_list_for_trader(trader=request.user, before=before)[: limit + 1])
        next_url = None
        if len(page) > limit:
            page = page[:limit]
            next_url = request.build_absolute_uri(f"{request.path}?limit={limit}&before={page[-1].pk}")
        return Response({"results": [_display(p) for p in page], "next": next_url})

    @extend_schema(
        operation_id="purchases_create",
        request=InputSerializer,
        responses={202: PurchaseOutputSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
    )
    def post(self, request):
        # Validated before the Idempotency-Key is claimed (as RegisterApi does): the key's
        # fingerprint falls back to the raw bytes when the body does not parse, after which
        # DRF hands the view an empty body, so the refusal would name the wrong problem.
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._create(request, data.validated_data)

    @idempotent
    def _create(self, request, data):
        plan = selectors.plan_get_purchasable(slug=data["plan"])
        if plan is None:
            raise NotFound("No plan with this slug is for sale.", fields={"plan": ["Unknown plan."]}, code="unknown_plan")
        purchase = services.purchase_create(
            trader=request.user,
            plan=plan,
            payment_method=data["payment_method"],
            payment_token=data["payment_token"],
        )
        shown = selectors.purchase_get_for_trader(trader=request.user, purchase_id=purchase.pk)
        return Response(_display(shown), status=202)


class PurchaseDetailApi(APIView):
    @extend_schema(
        operation_id="purchases_retrieve",
        # <id:...> (tradesense.common.converters): an integer within bigint.
        parameters=[OpenApiParameter("purchase_id", OpenApiTypes.INT64, OpenApiParameter.PATH)],
        responses={200: PurchaseOutputSerializer},
    )
    def get(self, request, purchase_id: int):
        purchase = selectors.purchase_get_for_trader(trader=request.user, purchase_id=purchase_id)
        if purchase is None:
            raise NotFound()
        return Response(_display(purchase))


class PaymentWebhookApi(APIView):
    """POST /payments/webhook: the processor's signed events. Authenticated by the
    HMAC signature alone (no session, so no CSRF; no token)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="payments_webhook",
        request={"application/json": {"type": "object"}},
        parameters=[OpenApiParameter("X-Signature", str, OpenApiParameter.HEADER, required=True,
                                     description="t=<unix>,v1=<hex HMAC-SHA256 of '<t>.' + raw body>")],
        responses={200: inline_serializer("WebhookReceipt", {
            "received": serializers.BooleanField(), "id": serializers.CharField(),
            "duplicate": serializers.BooleanField(), "outcome": serializers.CharField(),
        })},
    )
    def post(self, request):
        # The raw bytes, exactly as signed: read before anything parses the body.
        body = request._request.body
        # The service parses them with json.loads, which has no depth limit and lets NUL
        # through to the event row: the same strict check as every other JSON body first.
        json_loads_strict(body)
        result = services.webhook_receive(body=body, signature=request.headers.get("X-Signature"))
        return Response(
            {"received": True, "id": result.event_id, "duplicate": result.duplicate, "outcome": result.outcome}
        )
