"""DNS rebinding protection: an HTTP service answers only requests whose `Host` header is one of its own names.

A web page can point its own host name at 127.0.0.1 (a DNS answer with a short lifetime, then a new one), and
the browser then sends the page's requests to a service published on this machine, and lets the page read the
answers: to the browser it is still the page's own site. Such a request gives itself away by its `Host`
header, which is the page's name. So each service here lists the names it answers to (`localhost`, its compose
service name, its Kubernetes Service names) and refuses any other with 400, before the app sees it.

- A name in the list is allowed on any port. A name starting with a dot (`.svc.cluster.local`) allows itself
  and every name under it; `*.` (`*.example.com`) allows every name under it only; `*` alone allows any host
  (no check).
- An IP address (`127.0.0.1:8000`, `[::1]:8000`, a pod's IP as a kubelet probe or Prometheus sends it) is
  always allowed: a browser sends one only when the page's own address is that IP, and no DNS answer can
  change what an address means.
- A missing, repeated or malformed `Host` header is refused.

The same list stops cross-site request forgery. A page on any site may send a form or a `fetch` (text/plain, or
a body without a type) to `http://localhost:8000/predict` without reading the answer: the Host is right, and
no CORS preflight is asked for. The browser names the page's site in `Origin`. So a request that can change
something (any method but GET, HEAD and OPTIONS) or opens a WebSocket is refused with 403 when it carries an
`Origin` whose host is not allowed (`null`, a sandboxed page or a file, included; an IP address only when it is
a loopback one or the request's own). An allowed name is allowed on any port: a page of this machine's
`localhost` may post, as the machine's own user could anyway. Clients that are not
browsers (curl, requests, the other containers) send no `Origin`, and the service's own pages (Swagger UI,
Airflow's and Evidently's UIs) send their own.

Standard library only: the Airflow image installs this library without its dependencies, and its plugin
(services/airflow/plugins/host_check.py) wraps the API server in `HostCheck` too.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable

DEFAULT_ALLOWED_HOSTS = "localhost"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class AllowedHosts:
    """The names a service answers to, read once from a comma-separated list (see the module docstring); then
    `allows(host_header)` costs a set lookup, and a suffix test for the names that need one."""

    def __init__(self, patterns: str | Iterable[str] = DEFAULT_ALLOWED_HOSTS) -> None:
        items = patterns.split(",") if isinstance(patterns, str) else list(patterns)
        names: set[str] = set()
        suffixes: list[str] = []
        self.any = False
        for item in items:
            pattern = item.strip().lower().removesuffix(".")
            if not pattern:
                continue
            if "*" in pattern[1:] or "/" in pattern or (pattern.startswith("*") and pattern[:2] not in ("*", "*.")):
                raise ValueError(f"allowed host {item.strip()!r}: a wildcard is `*.name` or `.name`, at the start")
            if pattern == "*":
                self.any = True
            elif pattern.startswith("*."):
                suffixes.append(pattern[1:])
            elif pattern.startswith("."):
                names.add(pattern[1:])
                suffixes.append(pattern)
            elif _is_address(pattern.removeprefix("[").removesuffix("]")):
                continue  # every address is allowed anyway
            else:
                parsed = _name_and_port(pattern)
                if parsed is None or parsed[1]:
                    raise ValueError(f"allowed host {item.strip()!r}: a name without a port (any port is allowed)")
                names.add(parsed[0])
        self.names = frozenset(names | {"127.0.0.1", "::1"})  # addresses pass anyway; these two without parsing
        self.suffixes = tuple(suffixes)

    def allows(self, host: str | None) -> bool:
        """Whether a request with this `Host` header (name or address, with or without a port) is answered."""
        if self.any:
            return True
        if host is None:
            return False
        parsed = _name_and_port(host.lower())
        if parsed is None:
            return False
        name = parsed[0].removesuffix(".")
        return self._listed(name) or _is_address(name)

    def allows_origin(self, origin: str, host: str) -> bool:
        """Whether a browser's `Origin` header (`scheme://host[:port]`) names one of these hosts, for a request
        whose `Host` header is `host`. An address is not allowed as such here (a hostile page may well be
        served from one): only a loopback address, or the address the request itself was sent to."""
        scheme, separator, named = origin.partition("://")
        parsed = _name_and_port(named.lower()) if separator and "/" not in named and "@" not in named else None
        if scheme.lower() not in ("http", "https") or parsed is None:
            return False
        name = parsed[0].removesuffix(".")
        if _is_address(name):
            own = _name_and_port(host.lower())
            return ipaddress.ip_address(name).is_loopback or (own is not None and own[0] == name)
        return self._listed(name)

    def _listed(self, name: str) -> bool:
        """Whether `name` (lower case, no port, no trailing dot) is one of the names, or under a suffix."""
        return name in self.names or (bool(self.suffixes) and name.endswith(self.suffixes))

    def __repr__(self) -> str:
        listed = sorted(self.names) + [f"*{suffix}" for suffix in self.suffixes]
        return f"AllowedHosts({'*' if self.any else ','.join(listed)!r})"


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _name_and_port(host: str) -> tuple[str, str] | None:
    """`host[:port]` split in two (`[v6]:port` too, without its brackets); None when it is not one."""
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[1:end], host[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = host.partition(":")
        if ":" in port:  # an IPv6 address without brackets is not a Host header
            return None
    if not name or (port and not port.isdigit()) or (not port and host.endswith(":")):
        return None
    return name, port


class HostCheck:
    """Pure ASGI middleware: a request whose `Host` header the allowed hosts do not allow gets 400 (a WebSocket
    handshake, 403) and never reaches the app. `setting` names where the list comes from, for the answer."""

    def __init__(
        self, app, allowed: str | Iterable[str] | AllowedHosts = DEFAULT_ALLOWED_HOSTS, setting: str = ""
    ) -> None:
        self.app = app
        self.allowed = allowed if isinstance(allowed, AllowedHosts) else AllowedHosts(allowed)
        where = f" ({setting})" if setting else ""
        self.body = error_body("Invalid Host header: this service answers to its own host names only" + where)
        self.cross_site = error_body(
            "Cross-site request refused: its Origin is not one of this service's host names" + where
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allowed.any:
            return await self.app(scope, receive, send)
        host = origin = None
        hosts = 0
        for key, value in scope["headers"]:
            if key == b"host":
                hosts += 1
                host = value.decode("latin-1")
            elif key == b"origin":
                origin = value.decode("latin-1")
        if hosts != 1 or not self.allowed.allows(host):  # no Host, or two: which one would the app read?
            return await self._refuse(scope, send, 400, self.body)
        changes = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
        if origin is not None and changes and not self.allowed.allows_origin(origin, host):
            return await self._refuse(scope, send, 403, self.cross_site)
        return await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope, send, status: int, body: bytes) -> None:
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})  # before the handshake: the server's 403
        await send_error(send, status, body)


def error_body(text: str) -> bytes:
    """`{"detail": text}`, as FastAPI words an error, encoded."""
    return json.dumps({"detail": text}).encode()


async def send_error(send, status: int, body: bytes) -> None:
    """Answer with `status` and the JSON `body` over raw ASGI: for a middleware that answers before the app."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
