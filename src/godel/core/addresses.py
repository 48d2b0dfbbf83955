"""Which network addresses lead into this machine or its private network.

Shared by everything that connects somewhere on a caller's behalf (webhook deliveries, the sandbox's egress proxy):
such a connection must not become a way to reach what sits behind the server (its database, its API, a cloud
metadata service) unless the operator allows it.
"""

from __future__ import annotations

import ipaddress


def private_address(host: str) -> bool:
    """True for a loopback, private, link-local, reserved or multicast address, and for ``localhost`` names."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost")
    return not ip.is_global or ip.is_multicast
