"""Host and URL formatting shared by every role: IPv6 literals in brackets, any-address to loopback.

'::1' | url_host                 -> '[::1]'         ('10.0.0.1', 'mon1', '[::1]' unchanged)
'::' | host_port(9090)           -> '[::]:9090'
'0.0.0.0' | local_host           -> '127.0.0.1'     ('::' -> '::1'; '' -> '127.0.0.1')
'::' | local_url(9090, true)     -> 'https://[::1]:9090'
"""

from __future__ import annotations

from typing import Any

# How a host reaches a service of its own that listens on "any address".
ANY_TO_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}  # noqa: S104


def url_host(host: Any) -> str:
    """The host as it goes into a URL or host:port: an IPv6 literal in brackets."""
    text = str(host)
    return f"[{text}]" if ":" in text and not text.startswith("[") else text


def host_port(host: Any, port: Any) -> str:
    """host:port with an IPv6 literal in brackets."""
    return f"{url_host(host)}:{port}"


def local_host(address: Any) -> str:
    """The address a host uses to reach its own service listening on `address`."""
    text = str(address)
    return ANY_TO_LOOPBACK.get(text, text)


def local_url(address: Any, port: Any, tls: Any = False) -> str:
    """<scheme>://<local host>:<port> of a service of this host listening on `address`."""
    return f"{'https' if tls else 'http'}://{host_port(local_host(address), port)}"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "url_host": url_host,
            "host_port": host_port,
            "local_host": local_host,
            "local_url": local_url,
        }
