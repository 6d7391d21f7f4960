"""What a worker node lets a peer make it do: which files it loads (only blobs of its own store,
named by digest), where its runners listen (where the node listens), and a loud warning when a
TCP node on a routable address has no CURVE keys."""

from __future__ import annotations

import ipaddress
import logging
import os
import re

from herd.protocol.wire import DeviceInfo, RunnerSpec

log = logging.getLogger("herd.node")

_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")
_WILDCARDS = ("0.0.0.0", "*", "::", "[::]")


class Refused(Exception):
    """A LoadModel the node will not carry out; the text goes back to the gateway."""


def blob_path(models_dir: str, digest: str) -> str:
    """The blob `digest` names in this node's store; never a path a peer chose."""
    match = _DIGEST.fullmatch(digest)
    if match is None:
        raise Refused(f"{digest!r} is not a sha256 blob digest")
    path = os.path.join(models_dir, "blobs", f"sha256-{match[1]}")
    if not os.path.isfile(path):
        raise Refused(f"blob {digest} is not in this worker's model store ({models_dir})")
    return path


def check_memory(spec: RunnerSpec, paths: list[str], devices: list[DeviceInfo]) -> None:
    """A load may only spend what the node has: every device it names must exist and have the
    memory it declares free, and the declaration may not be less than its own weights (a
    peer cannot start a large model by claiming it is small)."""
    if not spec.devices:
        return
    if len(spec.device_memory) != len(spec.devices):
        raise Refused("the load names devices without the memory it needs on each")
    free = {d.id: d.free for d in devices}
    for device, need in zip(spec.devices, spec.device_memory):
        if device not in free:
            raise Refused(f"this worker node has no device {device}")
        if need > free[device]:
            raise Refused(f"not enough memory on {device}: the load needs {need} bytes, "
                          f"{free[device]} are free")
    weights = sum(os.path.getsize(path) for path in paths)
    if sum(spec.device_memory) < weights:
        raise Refused(f"the load declares {sum(spec.device_memory)} bytes for {weights} bytes "
                      "of weights")


def tcp_host(endpoint: str) -> str:
    """The host of tcp://HOST:PORT, brackets kept for IPv6."""
    rest = endpoint.removeprefix("tcp://")
    return rest.rsplit(":", 1)[0]


def runner_bind(node_bind: str) -> str:
    """A runner listens on the node's own address with an ephemeral port: a node bound to one
    interface must not open runner ports on every other one."""
    return f"tcp://{tcp_host(node_bind)}:*"


def advertised(endpoint: str, runner_host: str) -> str:
    """The endpoint gateways are told: a wildcard bind is advertised as HERD_RUNNER_HOST."""
    host = tcp_host(endpoint)
    if host in _WILDCARDS:
        return endpoint.replace(host, runner_host, 1)
    return endpoint


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or host name: assume reachable from outside


def warn_if_open(bind: str) -> None:
    if bind.startswith("tcp://") and not is_loopback(tcp_host(bind)):
        log.warning("!" * 78)
        log.warning("worker node bound to %s WITHOUT CURVE keys: anyone who can reach this port "
                    "can load models and run inference here. Set HERD_CURVE_SECRET_KEY and "
                    "HERD_CURVE_AUTHORIZED (see `herd keygen`).", bind)
        log.warning("!" * 78)
