"""Who is asking, by address: the socket's peer or, behind TRUSTED_PROXIES, the client they
name in X-Forwarded-For. Per-IP budgets are keyed by it."""

from __future__ import annotations

import ipaddress
import logging

log = logging.getLogger("banatie.edge")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_HOP_CHARS = 64  # an unreadable hop becomes a budget key: keep it short


def hop_address(hop: str) -> str | None:
    """The address in one X-Forwarded-For hop (`ip`, `ip:port`, `[v6]`, `[v6]:port`),
    normalised; None when the hop is not an address."""
    text, port = hop.strip(), ""
    if text.startswith("["):
        text, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        port = port[1:]
    elif text.count(":") == 1:  # IPv4 and a port; a bare IPv6 address has two colons or more
        text, _, port = text.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class TrustedProxies:
    """The proxies and load balancers whose X-Forwarded-For is believed."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        networks: list[Network] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                log.warning("ignoring TRUSTED_PROXIES entry %r: not an address or network", entry)
        self.networks = tuple(networks)

    def client_ip(self, peer: str | None, forwarded_for: bytes | None) -> str | None:
        """The peer, or from a trusted peer the nearest X-Forwarded-For hop not trusted."""
        if peer is None or forwarded_for is None or not self.trusts(peer):
            return peer
        for hop in reversed(forwarded_for.decode("latin-1").split(",")):
            hop = hop.strip()
            if not hop:
                continue
            address = hop_address(hop)
            if address is None:
                # A hop we cannot read ("unknown", a name) is still the client our proxy saw:
                # falling back to the proxy's address would pool all such clients in one budget.
                return hop[:MAX_HOP_CHARS]
            if not self.trusts(address):
                return address
        return peer

    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)
