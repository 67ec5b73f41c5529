"""Which addresses a page may reach: the SSRF guard's decision, as pure functions.

By default only public (globally routable, unicast) addresses pass. ``BROWSER_ALLOWED_HOSTS`` adds
host names (matched exactly, case-insensitively) and networks in CIDR notation. A host passes when it
is allowed by name, or when every address it resolves to passes: one private address among public
ones is enough to refuse it, since the browser could connect to any of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: a NAT64 gateway reaches the IPv4 address inside


@dataclass(frozen=True)
class AllowList:
    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()


def parse_allowed(text: str) -> AllowList:
    """``BROWSER_ALLOWED_HOSTS``: comma-separated host names and CIDRs; ValueError names a bad entry."""
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        name = normalize_host(entry)
        if not _is_host_name(name):
            raise ValueError(f"BROWSER_ALLOWED_HOSTS: {entry!r} is neither a host name nor a CIDR")
        hosts.add(name)
    return AllowList(frozenset(hosts), tuple(networks))


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, no IPv6 brackets."""
    return host.strip().strip("[]").rstrip(".").lower()


def canonical(address: IPAddress) -> IPAddress:
    """An IPv6 address that carries an IPv4 one (mapped ``::ffff:a.b.c.d``, 6to4, NAT64) is judged
    as the IPv4 address it leads to."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast: not private, loopback, link-local, multicast, reserved or shared."""
    address = canonical(address)
    return address.is_global and not address.is_multicast


def address_allowed(address: IPAddress, allow: AllowList) -> bool:
    address = canonical(address)
    listed = any(address.version == net.version and address in net for net in allow.networks)
    return listed or is_public(address)


def refusal(host: str, addresses: Iterable[str], allow: AllowList) -> str | None:
    """Why the browser may not connect to ``host`` (resolved to ``addresses``), or None if it may."""
    name = normalize_host(host)
    if not name:
        return "no host"
    if name in allow.hosts:
        return None
    resolved = list(addresses)
    if not resolved:
        return f"{name} does not resolve"
    for text in resolved:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone index is not part of it
        except ValueError:
            return f"{name} resolved to {text!r}, not an address"
        if not address_allowed(address, allow):
            return f"{name} resolves to {address}, which is not a public address (see BROWSER_ALLOWED_HOSTS)"
    return None


def _is_host_name(name: str) -> bool:
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(
        0 < len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum() and label.isascii()
        for label in labels
    )
