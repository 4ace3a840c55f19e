"""Who may talk to `tally ui`: the token, the Host header, and POST-only actions.

The server listens on the loopback interface unless `--host` says otherwise, but any
local process, and any web page the user's browser opens, can reach a loopback port.
So, as Jupyter does:

- A random token (`secrets.token_urlsafe`, 192 bits) is made at start and printed
  in the URL. Every request must carry it: `?token=` in the URL, the
  `X-Tally-Token` header, or the cookie the first page load sets (HttpOnly,
  SameSite=Strict, so another site's page never sends it). Compared in constant time.
- Actions (restore, promote, remove, queue) are POST requests that must carry the
  token in the `X-Tally-Token` header: a cookie alone is not enough, so a form on a
  hostile page cannot trigger one (a custom header needs a CORS preflight, which the
  server never grants), and their body must be JSON.
- The Host header must name the address the server listens on (or localhost): a
  DNS-rebinding page whose name resolves to 127.0.0.1 sends its own host name and is
  refused.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Mapping

TOKEN_BYTES = 24  # 192 bits: no guessing across the network or from another local user
HEADER = "x-tally-token"
QUERY = "token"
COOKIE_PREFIX = "tally-ui-token-"  # + port: two servers on one host keep their cookies apart
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def cookie_name(port: int) -> str:
    return f"{COOKIE_PREFIX}{port}"


@dataclass(frozen=True)
class Guard:
    """The checks every request passes through (see the module docstring)."""

    token: str
    port: int
    hosts: frozenset[str]  # host names (no port) the Host header may name

    @classmethod
    def for_server(cls, *, token: str, host: str, port: int) -> "Guard":
        names = set(LOOPBACK_NAMES) | {host, f"[{host}]" if ":" in host else host}
        return cls(token, port, frozenset(names))

    def token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def host_ok(self, host_header: str | None) -> bool:
        """True when the Host header names this server (any allowed name, our port)."""
        if not host_header:
            return False
        if host_header.startswith("["):  # an IPv6 literal: "[::1]:8000"
            name, _, rest = host_header.partition("]")
            name += "]"
            port = rest[1:] if rest.startswith(":") else ""
        else:
            name, _, port = host_header.rpartition(":")
        return port == str(self.port) and name.lower() in self.hosts

    def request_token(self, *, query: Mapping[str, str], headers: Mapping[str, str],
                      cookies: Mapping[str, str]) -> str | None:
        """The token a GET request carries, wherever it carries it."""
        return query.get(QUERY) or headers.get(HEADER) or cookies.get(cookie_name(self.port))

    def action_ok(self, *, method: str, headers: Mapping[str, str]) -> str | None:
        """Why an action request is refused (None: it may proceed)."""
        if method != "POST":
            return "actions must be POST requests"
        if not self.token_ok(headers.get(HEADER)):
            return f"actions need the token in the {HEADER} header"
        if not headers.get("content-type", "").startswith("application/json"):
            return "actions take a JSON body"
        return None


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES or host.startswith("127.")


__all__ = ["Guard", "new_token", "cookie_name", "is_loopback", "HEADER", "QUERY", "TOKEN_BYTES"]
