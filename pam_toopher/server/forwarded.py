"""Who sent a request, and how it was addressed, when a reverse proxy is in front.

X-Forwarded-For and X-Forwarded-Proto are anybody's to write, so they count
only when the connection itself comes from a proxy the admin named
(``--trusted-proxy``).  Pure functions; the front calls them per request.
"""
import ipaddress
from typing import Iterable, Optional, Sequence, Tuple, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def parse_trusted(values: Iterable[str]) -> Tuple[Network, ...]:
    """Networks from addresses or CIDR blocks; ValueError names the bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {value!r}") from None
    return tuple(networks)


def _address(text: str) -> Optional[Address]:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalise(peer: str) -> str:
    """The peer address as people write it (IPv4-mapped IPv6 shown as IPv4)."""
    address = _address(peer)
    return str(address) if address is not None else peer


def is_trusted(peer: str, trusted: Sequence[Network]) -> bool:
    address = _address(peer)
    return address is not None and any(address in network for network in trusted)


def client_address(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client: the peer, unless the peer is a trusted proxy; then the
    right-most X-Forwarded-For entry that is not itself a trusted proxy
    (entries further left were written by the client and prove nothing)."""
    if not is_trusted(peer, trusted):
        return normalise(peer)
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage in the chain: stop at the last hop we can vouch for
        if not any(address in network for network in trusted):
            return str(address)
    return normalise(peer)


def scheme(peer: str, forwarded_proto: Optional[str], own: str,
           trusted: Sequence[Network]) -> str:
    """http or https as the client used it: a trusted proxy that terminates TLS
    says so in X-Forwarded-Proto (the OAuth signature covers the scheme)."""
    if forwarded_proto and is_trusted(peer, trusted):
        last = forwarded_proto.split(",")[-1].strip().lower()
        if last in ("http", "https"):
            return last
    return own
