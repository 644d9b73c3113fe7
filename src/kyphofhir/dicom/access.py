"""Who may open an association: the allowed calling AE titles, each with an optional host.

Policy (deny by default):

- no allowed AEs configured: only peers on the loopback interface may associate, under
  any calling AE title (a local ``storescu``/``echoscu`` works out of the box, nothing
  from the network does);
- allowed AEs configured: the calling AE title must be on the list; an entry with a host
  (``PACS1@10.0.0.5``) also requires the peer's address to be that host (a name is
  resolved when checked). Loopback peers get no exemption.

Refusals are A-ASSOCIATE-RJ *rejected-permanent*, source *service-user*, reason 3
*calling-AE-title-not-recognized* (also for a known title from the wrong host: the pair
is not recognised). A wrong called AE title is reason 7, checked by pynetdicom.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass

log = logging.getLogger(__name__)

__all__ = ["AccessPolicy", "AllowedPeer", "parse_allowed_aes"]


@dataclass(frozen=True)
class AllowedPeer:
    """One entry of ``dicom_allowed_aes``: ``AE``, ``AE@host`` or ``AE@host:port``.

    ``port`` is where the peer itself listens; it is used only to send a Storage
    Commitment result on a new association when the peer has closed the one it asked on.
    """

    ae_title: str
    host: str | None = None
    port: int | None = None


def _check_ae_title(title: str, spec: str) -> str:
    if not title or len(title) > 16 or "\\" in title or not title.isprintable():
        raise ValueError(
            f"dicom_allowed_aes: {spec!r} has no valid AE title (1-16 printable "
            "characters, no backslash)"
        )
    return title


def parse_allowed_aes(spec: str) -> tuple[AllowedPeer, ...]:
    """Parse the comma-separated setting; raises ``ValueError`` naming the bad entry."""
    peers: list[AllowedPeer] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        title, at, where = item.partition("@")
        title = _check_ae_title(title.strip(), item)
        host: str | None = None
        port: int | None = None
        if at:
            where = where.strip()
            if where.startswith("["):  # [::1]:104
                host, _, rest = where[1:].partition("]")
                port_text = rest.removeprefix(":")
            elif where.count(":") == 1:
                host, _, port_text = where.partition(":")
            else:
                host, port_text = where, ""
            if not host:
                raise ValueError(f"dicom_allowed_aes: {item!r} has an empty host")
            if port_text:
                if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                    raise ValueError(f"dicom_allowed_aes: {item!r} has an invalid port")
                port = int(port_text)
        peers.append(AllowedPeer(title, host, port))
    return tuple(peers)


def _normalise(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (also as IPv4-mapped IPv6)."""
    ip = _normalise(address)
    return ip is not None and ip.is_loopback


@dataclass(frozen=True)
class AccessPolicy:
    """The allowed peers and the decision for one association request."""

    allowed: tuple[AllowedPeer, ...] = ()

    @classmethod
    def from_setting(cls, spec: str) -> AccessPolicy:
        return cls(parse_allowed_aes(spec))

    def permits(self, calling_ae: str, address: str) -> bool:
        """May ``calling_ae`` connecting from ``address`` associate?"""
        if not self.allowed:
            return is_loopback(address)
        title = calling_ae.strip()
        peer_ip = _normalise(address)
        for entry in self.allowed:
            if entry.ae_title != title:
                continue
            if entry.host is None:
                return True
            if peer_ip is not None and peer_ip in _resolve(entry.host):
                return True
        return False

    def peer(self, calling_ae: str, address: str) -> AllowedPeer | None:
        """The entry that let this peer in (for its commitment port), if any."""
        title = calling_ae.strip()
        peer_ip = _normalise(address)
        for entry in self.allowed:
            if entry.ae_title == title and (
                entry.host is None or (peer_ip is not None and peer_ip in _resolve(entry.host))
            ):
                return entry
        return None


def _resolve(host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses of an allowed host (an IP literal, or a name looked up now)."""
    literal = _normalise(host.strip("[]"))
    if literal is not None:
        return {literal}
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        log.warning("allowed AE host %r does not resolve: %s", host, exc)
        return set()
    found = set()
    for info in infos:
        ip = _normalise(str(info[4][0]))
        if ip is not None:
            found.add(ip)
    return found
