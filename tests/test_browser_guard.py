"""The SSRF guard's decision (pure) and the guarding proxy's refusals, without a browser."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.browser.guard import AllowList, address_allowed, canonical, is_public, parse_allowed, refusal
from workers.browser.proxy import GuardedProxy

NOT_PUBLIC = [
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10",
    "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "192.0.2.0/24", "::1/128", "fc00::/7", "fe80::/10",
    "ff00::/8", "2001:db8::/32", "::/128",
]  # fmt: skip
NONE = AllowList()

ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)


@st.composite
def inside(draw: st.DrawFn, cidrs: list[str]) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    net = ipaddress.ip_network(draw(st.sampled_from(cidrs)))
    return net[draw(st.integers(0, net.num_addresses - 1))]


@given(inside(NOT_PUBLIC))
def test_no_private_loopback_link_local_multicast_or_reserved_address_passes(address: object) -> None:
    assert isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
    assert not address_allowed(address, NONE)


@given(inside(NOT_PUBLIC[:10]))
def test_an_ipv4_address_in_ipv6_clothing_is_judged_as_itself(v4: object) -> None:
    assert isinstance(v4, ipaddress.IPv4Address)
    for wrapped in (f"::ffff:{v4}", f"64:ff9b::{v4}", f"2002:{int(v4) >> 16:x}:{int(v4) & 0xFFFF:x}::1"):
        address = ipaddress.IPv6Address(wrapped)
        assert canonical(address) == v4
        assert not address_allowed(address, NONE)


@given(st.one_of(ipv4, ipv6))
def test_allowed_means_public_or_listed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert address_allowed(address, NONE) == is_public(address)
    own = ipaddress.ip_network(canonical(address))
    assert address_allowed(address, AllowList(networks=(own,)))


def test_public_addresses_pass() -> None:
    for text in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert address_allowed(ipaddress.ip_address(text), NONE), text


def test_one_private_address_among_public_ones_refuses_the_host() -> None:
    assert refusal("example.org", ["93.184.215.14"], NONE) is None
    why = refusal("example.org", ["93.184.215.14", "10.1.2.3"], NONE)
    assert why is not None and "10.1.2.3" in why
    assert refusal("nowhere.invalid", [], NONE) is not None


def test_allow_list_names_and_networks() -> None:
    allow = parse_allowed(" Internal.Example. , 10.0.0.0/8,fd00::/8 ,")
    assert allow.hosts == frozenset({"internal.example"})
    assert refusal("INTERNAL.example", ["192.168.1.1"], allow) is None
    assert refusal("other", ["10.9.9.9", "fd00::5"], allow) is None
    assert refusal("other", ["10.9.9.9", "192.168.1.1"], allow) is not None
    assert refusal("[::ffff:10.0.0.1]", ["::ffff:10.0.0.1"], allow) is None


@pytest.mark.parametrize("bad", ["not a host!", "10.0.0.0/33", "a..b", "x" * 300])
def test_bad_allow_list_entries_are_named(bad: str) -> None:
    with pytest.raises(ValueError, match="BROWSER_ALLOWED_HOSTS"):
        parse_allowed(f"ok.example,{bad}")


def _ask(proxy: GuardedProxy, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(request)
        return sock.recv(4096)


def test_proxy_refuses_connect_and_plain_requests_to_private_addresses() -> None:
    with GuardedProxy(AllowList()) as proxy:
        tunnel = _ask(proxy, b"CONNECT 127.0.0.2:443 HTTP/1.1\r\nHost: 127.0.0.2:443\r\n\r\n")
        plain = _ask(proxy, b"GET http://10.0.0.1/x HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n")
        other = _ask(proxy, b"GET ftp://8.8.8.8/x HTTP/1.1\r\n\r\n")
    for answer in (tunnel, plain, other):
        assert answer.startswith(b"HTTP/1.1 403"), answer
    assert [entry.split(":")[0] for entry in proxy.refused] == ["127.0.0.2", "10.0.0.1"]
