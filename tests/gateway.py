"""A middleware standing for an infrastructure fault in front of the app (tests only)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

_lock = threading.Lock()
_failures = {"remaining": 0}


def fail_next(count: int) -> None:
    """Answer the next ``count`` requests to the run endpoint with 503."""
    with _lock:
        _failures["remaining"] = count


class FlakyGateway:
    """Answers 503 while failures are requested by :func:`fail_next`."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/cloudtasks/run/"):
            with _lock:
                if _failures["remaining"] > 0:
                    _failures["remaining"] -= 1
                    return HttpResponse("service unavailable", status=503)
        return self.get_response(request)
