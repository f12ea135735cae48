"""The REST API's JSON parser: every body it cannot read is a 400 naming the cause."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class JSONBodyParser(JSONParser):
    """DRF's parser answers bad JSON with a 400, but a body nested thousands of levels deep
    raises RecursionError, which it lets through as a 500."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(
                "JSON parse error - nested too deeply (1,000 levels at most)."
            ) from None
