"""The trader REST API (API.md): thin views that parse, authorize and call a service or
a selector. Errors are typed DomainErrors rendered by tradesense.common.errors."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

from django.contrib.auth import authenticate, password_validation, update_session_auth_hash
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import SAFE_METHODS, AllowAny, BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors as account_selectors
from accounts import services as account_services
from accounts.limits import (
    DurableScopedRateThrottle,
    SignupThrottle,
    is_locked_out,
    lockout_message,
    lockout_wait_seconds,
)
from accounts.models import ApiToken
from challenges import selectors, services
from challenges.errors import ChallengeNotFound, ChallengeStaleVersion
from challenges.market import market_price_set
from challenges.models import Challenge, Instrument, Order
from tradesense.common import parsing
from tradesense.common.audit import actor_label_for
from tradesense.common.clientip import client_address
from tradesense.common.errors import InvalidInput, NotFound
from tradesense.common.idempotency import idempotent
from tradesense.common.serializers import StrictSerializer
from tradesense.common.throttling import RedisScopedRateThrottle

# --- Input helpers ------------------------------------------------------------------------------

# [0-9], not \d: \d also matches Arabic-Indic and other digits, which Decimal() accepts.
_DECIMAL_RE = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$")
SYMBOL_MAX_LENGTH = Instrument._meta.get_field("symbol").max_length


@extend_schema_field(OpenApiTypes.STR)
class DecimalStringField(serializers.Field):
    """A positive decimal sent as a JSON string ("0.10") or integer.

    Floats are refused (they cannot hold a decimal exactly), as are NaN, Infinity,
    exponents, more than `decimal_places` decimals and more than `max_digits` digits."""

    default_error_messages = {
        "type": 'Must be a decimal string such as "0.10".',
        "invalid": 'Must be a decimal number such as "0.10".',
        "positive": "Must be greater than zero.",
        "precision": "At most {places} decimal places.",
        "huge": "Too large: at most {digits} digits before the decimal point.",
    }

    def __init__(self, *, max_digits: int = 24, decimal_places: int = 8, **kwargs):
        self.max_digits = max_digits
        self.decimal_places = decimal_places
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> Decimal:
        if isinstance(data, bool) or not isinstance(data, (str, int)):
            self.fail("type")
        text = str(data).strip()
        if len(text) > 64 or not _DECIMAL_RE.match(text):
            self.fail("invalid")
        try:
            value = Decimal(text)
        except InvalidOperation:
            self.fail("invalid")
        if value <= 0:
            self.fail("positive")
        # Size first: quantizing a 30-digit number would overflow the decimal context.
        if value.adjusted() >= self.max_digits - self.decimal_places:
            self.fail("huge", digits=self.max_digits - self.decimal_places)
        if value.as_tuple().exponent < -self.decimal_places and value != round(value, self.decimal_places):
            self.fail("precision", places=self.decimal_places)
        return value.quantize(Decimal(1).scaleb(-self.decimal_places))

    def to_representation(self, value) -> str:
        return str(value)


# Path ids are <id:...> (tradesense.common.converters): integers within bigint.
_CHALLENGE_ID = OpenApiParameter("challenge_id", OpenApiTypes.INT64, OpenApiParameter.PATH)


def _parse_if_match(request) -> int | None:
    """The challenge version an If-Match header names (None when absent or "*")."""
    return parsing.parse_version_header(request.headers.get("If-Match"))


def _parse_limit(request, *, default: int = 100) -> int:
    return parsing.parse_limit(request.query_params.get("limit"), default=default, cap=selectors.MAX_LIMIT)


def _parse_cursor(request) -> int | None:
    """`before`: the id the next page starts below (API.md lists)."""
    return parsing.parse_optional_id(request.query_params.get("before"), name="before")


def _next_url(request, *, before: int) -> str:
    params = request.query_params.copy()
    params["before"] = str(before)
    return request.build_absolute_uri(request.path) + "?" + urlencode(sorted(params.items()))


def _page(request, queryset, *, to_dict, default_limit: int = 100) -> dict:
    """Newest first, keyset-paginated on id: {"results", "next"} (API.md)."""
    limit = _parse_limit(request, default=default_limit)
    rows = list(queryset[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "results": [to_dict(row) for row in rows],
        "next": _next_url(request, before=rows[-1].pk) if more and rows else None,
    }


def _challenge_for(request, challenge_id: int) -> Challenge:
    challenge = Challenge.objects.filter(pk=challenge_id, trader=request.user).first()
    if challenge is None:
        raise ChallengeNotFound()
    return challenge


def _recording_conflicts(request, call):
    """Run a challenge-changing call; a stale If-Match becomes a Conflict row (written
    after the refused transaction rolled back) and a 409 stale_version."""
    try:
        return call()
    except ChallengeStaleVersion as exc:
        services.conflict_record(error=exc, attempted_by=actor_label_for(request.user))
        raise


def _with_etag(response: Response, version: int) -> Response:
    response["ETag"] = f'"{version}"'
    return response


class OrderThrottle(RedisScopedRateThrottle):
    """Order placement, per trader (rate: REST_FRAMEWORK DEFAULT_THROTTLE_RATES["orders"]),
    on Redis counters (tradesense/common/throttling.py): one round trip per order."""

    scope_attr = "throttle_scope"


# --- Response shapes (for the OpenAPI schema; the bodies come from the selectors) ---------------

_money = serializers.CharField  # a decimal as a JSON string ("5000.00")


def _page_of(name: str, item) -> serializers.Serializer:
    return inline_serializer(name, {"results": item(many=True), "next": serializers.URLField(allow_null=True)})


class BreachOut(serializers.Serializer):
    rule = serializers.CharField()
    threshold = _money()
    observed = _money()
    message = serializers.CharField()
    prices = serializers.DictField(child=_money())
    at = serializers.DateTimeField()
    ruleset_version = serializers.IntegerField()
    detected_by = serializers.CharField()


class ChallengeOut(serializers.Serializer):
    id = serializers.IntegerField()
    plan = serializers.SlugField()
    status = serializers.ChoiceField(choices=Challenge.Status.values)
    currency = serializers.CharField()
    starting_balance = _money()
    balance = _money()
    equity = _money()
    unrealized_pl = _money()
    day_start_balance = _money()
    day_start_equity = _money()
    day_anchor = _money()
    trading_day = serializers.DateField(allow_null=True)
    daily_loss_floor = _money()
    max_loss_floor = _money()
    profit_target_balance = _money()
    daily_loss_used_pct = _money()
    total_loss_used_pct = _money()
    trading_days = serializers.IntegerField()
    min_trading_days = serializers.IntegerField()
    leverage = _money()
    ruleset_version = serializers.IntegerField()
    failure_reason = serializers.CharField(allow_null=True)
    breach = BreachOut(allow_null=True)
    version = serializers.IntegerField()
    marked_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)


class OrderOut(serializers.Serializer):
    id = serializers.IntegerField()
    client_order_id = serializers.CharField()
    symbol = serializers.CharField()
    side = serializers.ChoiceField(choices=Order.Side.values)
    qty = _money()
    type = serializers.ChoiceField(choices=Order.Type.values)
    status = serializers.ChoiceField(choices=Order.Status.values)
    filled_qty = _money()
    filled_avg_price = _money()
    realized_pl = _money()
    reason = serializers.CharField(allow_null=True)
    filled_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()


class PositionOut(serializers.Serializer):
    symbol = serializers.CharField()
    qty = _money(help_text="signed: negative when short")
    side = serializers.CharField(help_text="long or short")
    avg_entry_price = _money()
    current_price = _money()
    market_value = _money()
    unrealized_pl = _money()
    contract_size = _money()
    opened_at = serializers.DateTimeField()


class PriceOut(serializers.Serializer):
    symbol = serializers.CharField()
    price = _money()
    at = serializers.DateTimeField()
    name = serializers.CharField(required=False)
    asset_class = serializers.CharField(required=False)
    contract_size = _money(required=False)
    qty_step = _money(required=False)
    min_qty = _money(required=False)


class LeaderboardRowOut(serializers.Serializer):
    rank = serializers.IntegerField()
    trader = serializers.CharField()
    challenge = serializers.IntegerField()
    plan = serializers.SlugField()
    status = serializers.CharField()
    profit_pct = _money()


# --- Accounts --------------------------------------------------------------------------------------


class RegisterApi(APIView):
    """Per client address: the `auth` request rate and the `signup` creation limit, both
    held through a Redis outage (accounts.limits)."""

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_scope = "auth"
    throttle_classes = [DurableScopedRateThrottle, SignupThrottle]

    @extend_schema_serializer(component_name="RegisterInput")
    class InputSerializer(StrictSerializer):
        username = serializers.RegexField(r"^[\w.@+-]{3,150}$", max_length=150)
        email = serializers.EmailField(max_length=254)
        password = serializers.CharField(max_length=128, trim_whitespace=False)

    @extend_schema(
        request=InputSerializer,
        responses={201: inline_serializer("Registered", {"id": serializers.IntegerField(), "username": serializers.CharField()})},
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._create(request, serializer.validated_data)

    @idempotent
    def _create(self, request, data):
        user = services.user_register(**data)
        return Response({"id": user.pk, "username": user.get_username()}, status=status.HTTP_201_CREATED)


def _authenticate_or_refuse(request, *, username: str, password: str, field: str, message: str):
    """The active user these credentials name, checked through authenticate() so that
    django-axes counts a failure; a locked-out account or address is 429 with
    Retry-After, wrong credentials a 400 naming `field`."""
    user = authenticate(request=request._request, username=username, password=password)
    if user is not None and user.is_active:
        return user
    if is_locked_out(request._request):
        wait = lockout_wait_seconds(request._request)
        raise exceptions.Throttled(wait=wait, detail=lockout_message(wait))
    raise InvalidInput(message, fields={field: [message]}, code="invalid_credentials")


class TokenApi(APIView):
    """A new API token for a username and password. Failed attempts are counted per
    account and per client address by django-axes (in the database); a locked-out
    attempt is 429 with Retry-After. Not replayable by Idempotency-Key: the answer is a
    secret, and secrets are never stored."""

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_scope = "auth"
    throttle_classes = [DurableScopedRateThrottle]

    @extend_schema_serializer(component_name="TokenInput")
    class InputSerializer(StrictSerializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=128, trim_whitespace=False)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: inline_serializer(
                "TokenOut",
                {"token": serializers.CharField(), "id": serializers.IntegerField(), "expires": serializers.DateTimeField()},
            )
        },
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = _authenticate_or_refuse(
            request, **serializer.validated_data, field="non_field_errors", message="Unknown username or wrong password."
        )
        issued = account_services.token_create(user=user, created_from=client_address(request.META))
        return Response({"token": issued.secret, "id": issued.token.pk, "expires": issued.token.expires_at})


class ApiTokenOut(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    created_from = serializers.CharField(allow_null=True)
    current = serializers.BooleanField(help_text="The token this request authenticated with.")


class PasswordChangeApi(APIView):
    """The caller changes their own password: the current one is checked the way a sign-in
    is (a wrong one counts towards the account's lockout), the new one against the
    password validators. Every API token and WebSocket ticket of the account is revoked,
    the caller's own token included; a browser's session stays signed in."""

    throttle_scope = "auth"
    throttle_classes = [DurableScopedRateThrottle]

    @extend_schema_serializer(component_name="PasswordChangeInput")
    class InputSerializer(StrictSerializer):
        current_password = serializers.CharField(max_length=128, trim_whitespace=False)
        new_password = serializers.CharField(max_length=128, trim_whitespace=False)

    @extend_schema(request=InputSerializer, responses={204: None})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = _authenticate_or_refuse(
            request, username=request.user.get_username(), password=data["current_password"],
            field="current_password", message="The current password is wrong.",
        )
        try:
            password_validation.validate_password(data["new_password"], user)
        except DjangoValidationError as exc:
            raise InvalidInput(
                "Choose another password.", fields={"new_password": list(exc.messages)}, code="invalid"
            ) from None
        account_services.password_change(user=user, new_password=data["new_password"], actor=request.user)
        if request._request.session.session_key:
            update_session_auth_hash(request._request, user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenListApi(APIView):
    """The caller's live API tokens (never their secrets), newest first."""

    @extend_schema(
        responses={200: _page_of("ApiTokenPage", ApiTokenOut)},
        parameters=[OpenApiParameter("limit", int), OpenApiParameter("before", int)],
    )
    def get(self, request):
        current = request.auth.pk if isinstance(request.auth, ApiToken) else None

        def to_dict(token):
            return {
                "id": token.pk,
                "created_at": token.created_at,
                "expires_at": token.expires_at,
                "created_from": token.created_from,
                "current": token.pk == current,
            }

        tokens = account_selectors.token_list_for_user(user=request.user)
        before = _parse_cursor(request)
        if before is not None:
            tokens = tokens.filter(pk__lt=before)
        return Response(_page(request, tokens, to_dict=to_dict))


class TokenRevokeApi(APIView):
    """Revoke one of the caller's tokens (someone else's: 404)."""

    @extend_schema(responses={204: None})
    def delete(self, request, token_id: int):
        account_services.token_revoke(user=request.user, token_id=token_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WsTicketApi(APIView):
    """A single-use ticket for one WebSocket connection (`/ws/v1/stream?ticket=`), valid
    WS_TICKET_TTL. Not replayable by Idempotency-Key (the answer is a secret)."""

    throttle_scope = "auth"
    throttle_classes = [DurableScopedRateThrottle]

    @extend_schema(
        request=None,
        responses={201: inline_serializer("WsTicket", {"ticket": serializers.CharField(), "expires": serializers.DateTimeField()})},
    )
    def post(self, request):
        ticket, expires = account_services.ws_ticket_issue(user=request.user)
        return Response({"ticket": ticket, "expires": expires}, status=status.HTTP_201_CREATED)


# --- Plans ------------------------------------------------------------------------------------------


class PlanListApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="Plan")
    class OutputSerializer(serializers.Serializer):
        slug = serializers.SlugField()
        name = serializers.CharField()
        description = serializers.CharField()
        price = serializers.DecimalField(max_digits=20, decimal_places=2)
        currency = serializers.CharField()
        starting_balance = serializers.DecimalField(max_digits=20, decimal_places=2)
        account_currency = serializers.CharField()
        profit_target_pct = serializers.DecimalField(max_digits=7, decimal_places=2)
        max_daily_loss_pct = serializers.DecimalField(max_digits=7, decimal_places=2)
        max_total_loss_pct = serializers.DecimalField(max_digits=7, decimal_places=2)
        min_trading_days = serializers.IntegerField()
        leverage = serializers.DecimalField(max_digits=8, decimal_places=2)
        daily_reset_tz = serializers.CharField()
        daily_reset_time = serializers.TimeField()
        daily_anchor = serializers.CharField()
        max_loss_mode = serializers.CharField()
        trailing_locks_at_start = serializers.BooleanField()
        best_day_max_share_pct = serializers.DecimalField(max_digits=7, decimal_places=2, allow_null=True)
        max_duration_days = serializers.IntegerField(allow_null=True)
        inactivity_days = serializers.IntegerField(allow_null=True)
        ruleset_version = serializers.IntegerField()

    @extend_schema(responses=_page_of("PlanPage", OutputSerializer), auth=[])
    def get(self, request):
        data = self.OutputSerializer(selectors.plan_list(), many=True).data
        return Response({"results": data, "next": None})


# --- Challenges ---------------------------------------------------------------------------------------


class ChallengeListApi(APIView):
    @extend_schema(
        operation_id="challenges_list",
        parameters=[OpenApiParameter("limit", int), OpenApiParameter("before", int)],
        responses=_page_of("ChallengePage", ChallengeOut),
    )
    def get(self, request):
        challenges = selectors.challenge_list_for_trader(trader=request.user)
        before = _parse_cursor(request)
        if before is not None:
            challenges = challenges.filter(pk__lt=before)
        return Response(_page(request, challenges, to_dict=lambda c: selectors.challenge_snapshot(challenge=c)))


@extend_schema(parameters=[_CHALLENGE_ID])
class ChallengeDetailApi(APIView):
    @extend_schema(
        operation_id="challenges_retrieve",
        parameters=[OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER)],
        responses={200: ChallengeOut, 304: None},
    )
    def get(self, request, challenge_id: int):
        challenge = selectors.challenge_get_for_trader(trader=request.user, challenge_id=challenge_id)
        etag = f'"{challenge.version}"'
        if request.headers.get("If-None-Match") == etag:
            return _with_etag(Response(status=status.HTTP_304_NOT_MODIFIED), challenge.version)
        return _with_etag(Response(selectors.challenge_snapshot(challenge=challenge)), challenge.version)


@extend_schema(parameters=[_CHALLENGE_ID])
class OrderListCreateApi(APIView):
    throttle_scope = "orders"

    @extend_schema_serializer(component_name="OrderInput")
    class InputSerializer(StrictSerializer):
        symbol = serializers.CharField(max_length=16)
        side = serializers.ChoiceField(choices=Order.Side.values)
        qty = DecimalStringField()
        type = serializers.ChoiceField(choices=Order.Type.values, default=Order.Type.MARKET)
        client_order_id = serializers.RegexField(
            r"^[A-Za-z0-9._:-]{1,64}$",
            required=False,
            error_messages={"invalid": "1 to 64 characters among letters, digits and . _ : -"},
        )

        def validate_symbol(self, value: str) -> str:
            return value.strip().upper()

    def get_throttles(self):
        # Placing orders is throttled per trader; reading them is not.
        return [OrderThrottle()] if self.request.method == "POST" else []

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=Order.Status.values),
            OpenApiParameter("symbol", str),
            OpenApiParameter("limit", int),
            OpenApiParameter("before", int),
        ],
        responses=_page_of("OrderPage", OrderOut),
    )
    def get(self, request, challenge_id: int):
        challenge = _challenge_for(request, challenge_id)
        params = request.query_params
        orders = selectors.order_list(
            challenge=challenge,
            status=parsing.parse_choice(params.get("status"), name="status", choices=Order.Status.values),
            symbol=parsing.parse_text(params.get("symbol"), name="symbol", max_length=SYMBOL_MAX_LENGTH),
            before=_parse_cursor(request),
        )
        return Response(_page(request, orders, to_dict=selectors.order_to_dict))

    @extend_schema(
        request=InputSerializer,
        parameters=[
            OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER),
            OpenApiParameter("If-Match", str, OpenApiParameter.HEADER),
        ],
        responses={201: OrderOut, 200: OrderOut},
    )
    def post(self, request, challenge_id: int):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        expected_version = _parse_if_match(request)
        return _recording_conflicts(
            request, lambda: self._create(request, challenge_id, serializer.validated_data, expected_version)
        )

    @idempotent
    def _create(self, request, challenge_id, data, expected_version):
        result = services.order_place(
            challenge_id=challenge_id,
            trader=request.user,
            symbol=data["symbol"],
            side=data["side"],
            qty=data["qty"],
            client_order_id=data.get("client_order_id"),
            expected_version=expected_version,
            # Under an Idempotency-Key a refused order rolls back the record's whole
            # transaction, so the order needs no savepoint of its own (the hot path).
            savepoint=not getattr(request, "transaction_fails_whole", False),
        )
        # A retried client_order_id answers 200 with the first order: nothing was filled.
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return _with_etag(Response(selectors.order_to_dict(result.order), status=code), result.challenge.version)


@extend_schema(parameters=[_CHALLENGE_ID])
class OrderByClientOrderIdApi(APIView):
    @extend_schema(responses=OrderOut)
    def get(self, request, challenge_id: int, client_order_id: str):
        challenge = _challenge_for(request, challenge_id)
        order = selectors.order_get_by_client_order_id(challenge=challenge, client_order_id=client_order_id)
        return Response(selectors.order_to_dict(order))


@extend_schema(parameters=[_CHALLENGE_ID])
class PositionListApi(APIView):
    @extend_schema(responses=_page_of("PositionPage", PositionOut))
    def get(self, request, challenge_id: int):
        challenge = _challenge_for(request, challenge_id)
        return Response({"results": selectors.position_list(challenge=challenge), "next": None})


@extend_schema(parameters=[_CHALLENGE_ID])
class PositionCloseApi(APIView):
    throttle_scope = "orders"
    throttle_classes = [OrderThrottle]

    @extend_schema(parameters=[OpenApiParameter("If-Match", str, OpenApiParameter.HEADER)], responses=OrderOut)
    def delete(self, request, challenge_id: int, symbol: str):
        expected_version = _parse_if_match(request)
        result = _recording_conflicts(
            request,
            lambda: services.position_close(
                challenge_id=challenge_id, trader=request.user, symbol=symbol, expected_version=expected_version
            ),
        )
        return _with_etag(Response(selectors.order_to_dict(result.order)), result.challenge.version)


@extend_schema(parameters=[_CHALLENGE_ID])
class PortfolioHistoryApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("timeframe", str, enum=list(selectors.TIMEFRAMES)),
            OpenApiParameter("limit", int),
        ],
        responses=inline_serializer(
            "PortfolioHistory",
            {
                "timestamp": serializers.ListField(child=serializers.DateTimeField()),
                "equity": serializers.ListField(child=_money()),
                "profit_loss": serializers.ListField(child=_money()),
                "base_value": _money(),
                "timeframe": serializers.CharField(),
            },
        ),
    )
    def get(self, request, challenge_id: int):
        challenge = _challenge_for(request, challenge_id)
        timeframe = parsing.parse_choice(request.query_params.get("timeframe"), name="timeframe", choices=selectors.TIMEFRAMES)
        limit = _parse_limit(request, default=200)
        return Response(selectors.portfolio_history(challenge=challenge, timeframe=timeframe, limit=max(limit, 2)))


# --- Market -----------------------------------------------------------------------------------------------


class MarketPriceListApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(operation_id="market_prices_list", responses=_page_of("PricePage", PriceOut), auth=[])
    def get(self, request):
        return Response({"results": selectors.market_prices(), "next": None})


class CanSetPrice(BasePermission):
    """The challenges.set_price role: a price decides who passes, so being staff is not enough."""

    def has_permission(self, request, view) -> bool:
        return request.user.has_perm("challenges.set_price")


class MarketPriceApi(APIView):
    """GET: one symbol's price and recent history. PUT (challenges.set_price): set the price now."""

    @extend_schema_serializer(component_name="PriceInput")
    class InputSerializer(StrictSerializer):
        price = DecimalStringField(max_digits=24, decimal_places=8)

    def get_permissions(self):
        # Every write method, not only PUT: an unknown one is then 405 only for those allowed to write.
        if self.request.method not in SAFE_METHODS:
            return [IsAuthenticated(), CanSetPrice()]
        return [AllowAny()]

    @extend_schema(
        parameters=[OpenApiParameter("limit", int)],
        responses=inline_serializer(
            "PriceDetail",
            {
                "symbol": serializers.CharField(),
                "price": _money(),
                "at": serializers.DateTimeField(),
                "history": serializers.ListField(child=serializers.DictField()),
            },
        ),
        auth=[],
    )
    def get(self, request, symbol: str):
        instrument = Instrument.objects.filter(symbol=symbol, is_active=True).first()
        if instrument is None:
            raise NotFound(f"Unknown symbol {symbol!r}.")
        limit = _parse_limit(request, default=100)
        history = selectors.price_history(symbol=symbol, since=timezone.now() - timedelta(days=1), limit=limit)
        return Response(
            {"symbol": symbol, "price": str(instrument.price), "at": selectors.iso_utc(instrument.price_at), "history": history}
        )

    @extend_schema(request=InputSerializer, responses=PriceOut)
    def put(self, request, symbol: str):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if not Instrument.objects.filter(symbol=symbol, is_active=True).exists():
            raise NotFound(f"Unknown symbol {symbol!r}.")
        tick = market_price_set(symbol=symbol, price=serializer.validated_data["price"], actor=request.user)
        return Response({"symbol": symbol, "price": str(tick.price), "at": selectors.iso_utc(tick.at)})


# --- Leaderboard --------------------------------------------------------------------------------------------


class LeaderboardApi(APIView):
    @extend_schema(parameters=[OpenApiParameter("limit", int)], responses=_page_of("LeaderboardPage", LeaderboardRowOut))
    def get(self, request):
        return Response({"results": selectors.leaderboard(limit=_parse_limit(request, default=50)), "next": None})
