"""The server's rules on who may talk to it and what its responses may do, in one place
(no FastAPI here: ``ccc serve``'s parser reads them on a base install).

- Host rule: without a token, only requests whose ``Host`` names this machine by a
  loopback name (``localhost``, ``127.0.0.0/8``, ``[::1]``, any port) or a name the user
  listed are served, so a page on a rebound DNS name cannot pass as same-origin.
- Locked mode: model loaders load only the server's model folders and listed repo ids;
  the default whenever the server listens beyond loopback.
- Response headers: ``nosniff`` and a Content-Security-Policy on everything; user data
  gets a sandboxing policy that lets nothing in it run.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["CSP", "USERDATA_CSP", "host_allowed", "host_name", "is_loopback"]

# Everything the editor needs from its own origin and nothing from elsewhere; no framing,
# no plugins, no foreign form targets. (The editor's inline import map and its Vue build's
# template compiler need inline scripts and eval.)
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; font-src 'self' data:; media-src 'self' data: blob:; "
       "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
       "form-action 'self'; frame-ancestors 'none'")
# What /userdata sends: nothing in it runs, loads or is framed, even when opened directly.
USERDATA_CSP = "default-src 'none'; style-src 'self'; sandbox; frame-ancestors 'none'"


def is_loopback(name: str) -> bool:
    """Whether a host name (no port; brackets allowed) is this machine's loopback."""
    name = name.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str | None:
    """The name part of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), lower
    case; ``None`` when it is not a well-formed host."""
    if not host or any(c in host for c in "/\\@?# "):
        return None
    try:
        parts = urlsplit(f"//{host}")
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return None
    return (parts.hostname or "").rstrip(".") or None


def host_allowed(host: str, allowed: tuple[str, ...] | list[str] = ()) -> bool:
    """The host rule: a loopback name or one of ``allowed`` (names, any port)."""
    name = host_name(host)
    if name is None:
        return False
    return is_loopback(name) or name in {a.strip().strip("[]").rstrip(".").lower() for a in allowed}
