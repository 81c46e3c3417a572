"""Where a webhook may point (SPEC §11): `https://` or `http://`, to a host that resolves to
public addresses only, unless the server allows private ones
(`SIGNALSCORE_WEBHOOK_ALLOW_PRIVATE`). Checked when a subscription is created or its URL
changed, and again before every delivery (a name may resolve elsewhere later)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from signalscore.errors import Invalid

MAX_URL_CHARS = 2000


def _unsafe(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _refuse(field: str, message: str, code: str = "UNSAFE_WEBHOOK_URL") -> Invalid:
    return Invalid.one(field, code, message)


def check_url(url: str, *, allow_private: bool, field: str = "url") -> str:
    """The URL, or 422 naming `field`: `INVALID_WEBHOOK_URL` when it is not an http(s) URL
    with a host, `UNSAFE_WEBHOOK_URL` when its host is (or resolves to) a loopback, private,
    link-local, multicast or reserved address, `UNRESOLVABLE_WEBHOOK_HOST` when it does not
    resolve."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refuse(field, "'url' is not a valid URL", "INVALID_WEBHOOK_URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse(
            field, "'url' must be an http:// or https:// URL with a host", "INVALID_WEBHOOK_URL"
        )
    if allow_private:
        return url
    host = parts.hostname
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            found = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            raise _refuse(
                field, f"the host {host[:100]!r} does not resolve", "UNRESOLVABLE_WEBHOOK_HOST"
            ) from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
    if any(_unsafe(address) for address in addresses):
        raise _refuse(
            field,
            "'url' points to a loopback, private, link-local or multicast address; the server "
            "must run with SIGNALSCORE_WEBHOOK_ALLOW_PRIVATE=true to deliver there",
        )
    return url
