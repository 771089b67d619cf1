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
    every request: about 20 us of a one-row prediction, in process. So a dependency would never run: one
    declared on such a route fails the app's start, and none may be given to `include_router` for its router."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        if self.dependant.dependencies:  # they would be ignored: say so when the app is built
            raise TypeError(f"{self.path}: a DirectRoute endpoint takes the Request alone, without dependencies")
        return self.endpoint
