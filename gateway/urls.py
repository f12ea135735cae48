"""/v1/: the OpenAI-compatible inference API."""

from typing import Any

from django.urls import path

from gateway import views

# The stubs know only sync views; Django serves these async ones natively.
_views: dict[str, Any] = {
    "models": views.models,
    "chat": views.chat_completions,
    "completions": views.completions,
}

urlpatterns = [
    path("models", _views["models"], name="v1-models"),
    path("chat/completions", _views["chat"], name="v1-chat-completions"),
    path("completions", _views["completions"], name="v1-completions"),
]
