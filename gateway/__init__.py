"""The inference gateway: the OpenAI-compatible API, served async under ASGI."""
