"""Where a website check may connect, and for how long.

- :class:`AddressPolicy` refuses loopback, private, link-local, unique-local,
  carrier-grade NAT, multicast, reserved and cloud metadata addresses (and
  their IPv4-mapped, 6to4 and NAT64 forms) unless ``CELERY_STACK_WEBCHECK_ALLOW``
  lists them (a network, or the host name of the check).
- :class:`GuardedHTTPConnection` is http.client's ``HTTPConnection`` with its
  documented ``connect()`` replaced: it resolves the name itself, checks every
  answer, and connects to a permitted address *by number*. What is checked is
  what is connected to, so neither a DNS answer that changes between two
  lookups (rebinding) nor a redirect can reach an address the policy refuses.
- :class:`Deadline` bounds the whole check: each connect, TLS handshake, send
  and receive waits at most ``min(its own timeout, time left)``, so a server
  that sends one byte a second cannot hold a worker thread past the deadline.
"""

from __future__ import annotations

import errno
import http.client
import io
import ipaddress
import socket
import ssl
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

ALLOW_VARIABLE = "CELERY_STACK_WEBCHECK_ALLOW"

#: Cloud instance metadata services: AWS IMDS (IPv4 and IPv6), ECS task
#: metadata, EKS Pod Identity (IPv4 and IPv6), Alibaba Cloud; Azure, Google
#: Cloud and OpenStack use 169.254.169.254 too. A host name entry of the allow
#: list never opens these; only a network entry that contains them does.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.170.23",
    "fd00:ec2::254", "fd00:ec2::23", "100.100.100.200"))
#: Well-known names of those services (Google Cloud, AWS), refused before DNS.
METADATA_NAMES = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog",
    "instance-data", "instance-data.ec2.internal"})

# Ranges named explicitly: the ipaddress properties lump some of them into
# is_private / is_global (and their tables change between Python versions).
_NAMED_RANGES: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), name) for net, name in (
        ("0.0.0.0/8", "'this network' (RFC 791)"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("100.64.0.0/10", "carrier-grade NAT (RFC 6598)"),
        ("fc00::/7", "unique-local (RFC 4193)"),
    ))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _unscoped(ip: IPAddress) -> IPAddress:
    """fe80::1%eth0 -> fe80::1 (a zone index does not change what the address is)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return ipaddress.IPv6Address(ip.compressed.split("%")[0])
    return ip


def address_class(ip: IPAddress) -> str | None:
    """The class of a non-public address ("loopback", "private (RFC 1918)",
    "cloud metadata", ...), or None for a publicly routable one."""
    ip = _unscoped(ip)
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            form, inner = embedded
            inner_class = address_class(inner)
            return f"{form} {inner_class}" if inner_class else None
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    for net, name in _NAMED_RANGES:
        if ip.version == net.version and ip in net:
            return name
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local (RFC 3879)"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        return "special-purpose (not globally routable)"
    return None


def is_metadata(ip: IPAddress) -> bool:
    """A cloud metadata address, in any of its forms."""
    ip = _unscoped(ip)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return embedded[1] in METADATA_ADDRESSES
    return ip in METADATA_ADDRESSES


class Refused(Exception):
    """The policy refuses the address (or name) a check would connect to."""

    def __init__(self, host: str, address: IPAddress | None, reason: str):
        self.host, self.address, self.reason = host, address, reason
        target = host if address is None or host == str(address) else f"{host} -> {address}"
        kind = "name" if address is None else "address"
        super().__init__(f"refused: {target} ({reason} {kind}), not in {ALLOW_VARIABLE}")


@dataclass(frozen=True)
class AddressPolicy:
    """Which non-public addresses a check may reach: ``networks`` (any host name)
    and ``names`` (any address that name resolves to, except cloud metadata)."""

    networks: tuple[IPNetwork, ...] = ()
    names: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> AddressPolicy:
        """Build from the allow list's entries: networks ("10.0.0.0/8", "127.0.0.1") and host names."""
        networks, names = [], set()
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.strip().lower().rstrip("."))
        return cls(tuple(networks), frozenset(names))

    def _in_networks(self, ip: IPAddress) -> bool:
        ip = _unscoped(ip)
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(ip)
            if embedded is not None:
                candidates.append(embedded[1])
        return any(c.version == n.version and c in n for c in candidates for n in self.networks)

    def check_name(self, host: str) -> None:
        """Refuse a well-known metadata name before any DNS lookup."""
        name = host.lower().rstrip(".")
        if name in METADATA_NAMES and name not in self.names:
            raise Refused(host, None, "cloud metadata")

    def check_address(self, host: str, ip: IPAddress) -> None:
        """Refuse connecting to ``ip`` for a URL naming ``host`` unless allowed."""
        if self._in_networks(ip):
            return
        reason = address_class(ip)
        if reason is None:
            return
        if host.lower().rstrip(".") in self.names and not is_metadata(ip):
            return
        raise Refused(host, ip, reason)


class DeadlineExceeded(TimeoutError):
    """The check's total deadline passed."""


class Deadline:
    """A point in time after which no socket operation of the check may wait."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started = time.monotonic()
        self.ends = self.started + seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def timeout(self, limit: float) -> float:
        """The timeout of the next operation: ``limit``, or less if the deadline is nearer."""
        left = self.ends - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"total deadline of {self.seconds} s reached")
        return min(limit, left)

    def expired(self) -> bool:
        """True once the deadline passed (within 10 ms: a timed-out wait may wake a little early)."""
        return time.monotonic() >= self.ends - 0.01


def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    """DNS (or a literal address): getaddrinfo's answers for a TCP connection. Tests replace it."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def open_socket(host: str, port: int, policy: AddressPolicy, deadline: Deadline,
                connect_timeout: float) -> tuple[socket.socket, IPAddress]:
    """Connect to the first address of ``host`` the policy permits; raise :class:`Refused`
    when it permits none, or the last connection error."""
    policy.check_name(host)
    refused: Refused | None = None
    error: OSError | None = None
    for family, type_, proto, _, sockaddr in resolve(host, port):
        ip = ipaddress.ip_address(sockaddr[0])
        try:
            policy.check_address(host, ip)
        except Refused as exc:
            refused = refused or exc
            continue
        sock = socket.socket(family, type_, proto)
        try:
            sock.settimeout(deadline.timeout(connect_timeout))
            sock.connect(sockaddr)
            return sock, ip
        except DeadlineExceeded:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            error = exc
    if error is not None:
        raise error
    if refused is not None:
        raise refused
    raise OSError(f"no address for {host}")


class _DeadlineReader(io.RawIOBase):
    """The response stream: each receive bounded by the read timeout and the deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline, read_timeout: float):
        super().__init__()
        self._sock, self._deadline, self._read_timeout = sock, deadline, read_timeout
        self._raw = sock.makefile("rb", buffering=0)  # holds a reference: the socket stays open while read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(self._deadline.timeout(self._read_timeout))
        try:
            return self._raw.readinto(buffer)
        except TimeoutError:
            if self._deadline.expired():
                raise DeadlineExceeded(f"total deadline of {self._deadline.seconds} s reached") from None
            raise

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class DeadlineSocket:
    """The connected socket as http.client uses it (``sendall``, ``makefile``,
    ``close``), with every send and receive bounded by the deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline, read_timeout: float):
        self._sock, self._deadline, self._read_timeout = sock, deadline, read_timeout

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(self._deadline.timeout(self._read_timeout))
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"DeadlineSocket.makefile supports 'rb' only, got {mode!r}")
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline, self._read_timeout))

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class GuardedHTTPConnection(http.client.HTTPConnection):
    """``HTTPConnection`` whose ``connect()`` resolves, checks the address against the
    policy, connects by number under the deadline and, with an ``ssl_context``,
    performs the TLS handshake (SNI and certificate checked against the URL's host)."""

    def __init__(self, host: str, port: int | None, *, policy: AddressPolicy, deadline: Deadline,
                 connect_timeout: float, read_timeout: float, ssl_context: ssl.SSLContext | None = None):
        super().__init__(host, port, timeout=connect_timeout)
        self.policy, self.deadline = policy, deadline
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.ssl_context = ssl_context
        self.peer_address: IPAddress | None = None
        self.peer_cert: dict[str, Any] | None = None

    def connect(self) -> None:
        """Connect to a permitted address of ``self.host`` (raises :class:`Refused` otherwise)."""
        sys.audit("http.client.connect", self, self.host, self.port)
        sock, self.peer_address = open_socket(self.host, self.port, self.policy, self.deadline,
                                              self.connect_timeout)
        try:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                if exc.errno != errno.ENOPROTOOPT:
                    raise
            if self.ssl_context is not None:
                sock.settimeout(self.deadline.timeout(self.connect_timeout))
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
                self.peer_cert = sock.getpeercert()
        except BaseException:
            sock.close()
            raise
        self.sock = DeadlineSocket(sock, self.deadline, self.read_timeout)  # type: ignore[assignment]


class GuardedHTTPSConnection(GuardedHTTPConnection):
    """The same over TLS (port 443 by default)."""

    default_port = http.client.HTTPS_PORT
