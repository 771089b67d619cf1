"""`GET /metrics`: the service's Prometheus metrics, over every worker process (`serve.metrics`)."""

from fastapi import APIRouter, Response

from mlops_sandbox.serve.metrics import exposition

router = APIRouter()


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics() -> Response:
    """Requests, latency and errors by status; captured, uploaded, spooled and lost predictions; spool bytes;
    the model version each worker serves. In Prometheus' text format."""
    body, content_type = exposition()
    return Response(body, media_type=content_type)
