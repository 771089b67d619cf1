"""A bare FastAPI endpoint that parses the JSON body and returns it: the floor for scripts/bench_predictor.py.

That script serves it with `uvicorn bench_echo_app:app --app-dir /bench --workers 2` in a container of the
project image, this folder mounted read-only on /bench.
"""

from typing import Annotated, Any

from fastapi import Body, FastAPI

app = FastAPI()


@app.post("/echo")
async def echo(body: Annotated[Any, Body()]) -> Any:
    return body
