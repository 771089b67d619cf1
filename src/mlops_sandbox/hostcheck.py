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

Standard library only: the Airflow image installs this library without its dependencies, and its plugin
(services/airflow/plugins/host_check.py) wraps the API server in `HostCheck` too.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable

DEFAULT_ALLOWED_HOSTS = "localhost"


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
        return name in self.names or (bool(self.suffixes) and name.endswith(self.suffixes)) or _is_address(name)

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
        detail = "Invalid Host header: this service answers to its own host names only"
        self.body = json.dumps({"detail": detail + (f" ({setting})" if setting else "")}).encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allowed.any:
            return await self.app(scope, receive, send)
        host = None
        for key, value in scope["headers"]:
            if key == b"host":
                if host is not None:  # two Host headers: which one would the app read?
                    host = None
                    break
                host = value.decode("latin-1")
        if self.allowed.allows(host):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})  # before the handshake: the server's 403
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})
