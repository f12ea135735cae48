"""/v1/: the OpenAI-compatible inference API."""

from django.urls import path

from tenants.inference import views

urlpatterns = [
    path("models", views.models, name="v1-models"),
    path("chat/completions", views.chat_completions, name="v1-chat-completions"),
    path("completions", views.completions, name="v1-completions"),
]
