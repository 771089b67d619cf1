"""The prediction service's routes, one module per concern; `serve.app.create_app` includes their routers."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class DirectRoute(APIRoute):
    """A route whose endpoint takes the `Request` alone and returns its `Response` itself (`/predict`,
    `/invocations`): FastAPI calls it as it is, without solving parameters or serializing an answer. Its OpenAPI
    entry is the one its decorator declares (responses, `openapi_extra`), as for any route.

    FastAPI's own handler solves the endpoint's (empty) dependencies and builds a response model's validator on
    every request: about 20 us of a one-row prediction, in process."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint
