# WebSocket routes; the live-updates issue adds /ws/v1/stream here.
websocket_urlpatterns = []
