# WebSocket routes (API.md): the live stream of challenge and purchase events.
from django.urls import path

from challenges.consumers import StreamConsumer

websocket_urlpatterns = [
    path("ws/v1/stream", StreamConsumer.as_asgi()),
]
