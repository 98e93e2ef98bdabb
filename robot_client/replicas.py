"""Several policy server replicas behind one client channel: gRPC client-side load balancing.

Why client-side: a robot client talks to a handful of GPU servers it knows; gRPC's round_robin policy spreads
calls over all of them without a proxy in the path (one hop less latency, one failure point less), and with
client-side health checking (`healthCheckConfig`, answered by every server's grpc.health.v1 service) a replica
that stops serving (NOT_SERVING during a drain, or gone) is taken out of the rotation by the channel itself.

Targets:
- "host:port": one server (gRPC's default pick_first);
- "10.0.0.5:50051,10.0.0.6:50051": a list of IP addresses (becomes gRPC's `ipv4:`/`ipv6:` target), round robin;
- "dns:///policy.internal:50051": every address the name resolves to, round robin.

Replicas must be interchangeable: before the channel is used, every listed address is asked for its metadata
and the client refuses a set whose model, weights, horizon or joint names differ (a round-robin over two
different checkpoints would alternate between two policies, chunk by chunk). A DNS target cannot be enumerated
here; its replicas are checked as they answer (the response names the replica that produced it, and every
response carries the model identity the client compares with `model_changes`).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from protos import policy_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PolicyService"].full_name


class ReplicaError(ValueError):
    """The replica target is malformed or the replicas are not interchangeable; the message names which."""


@dataclass(frozen=True)
class ReplicaTarget:
    """What the channel connects to: the gRPC target string, the addresses it stands for (empty for DNS) and
    whether calls are spread over several replicas."""

    channel_target: str
    addresses: tuple[str, ...]
    balanced: bool

    def service_config(self) -> str | None:
        """The channel's service config: round robin with client-side health checks, when balanced."""
        if not self.balanced:
            return None
        return json.dumps({
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": SERVICE_NAME},
        })


def parse_target(target: str) -> ReplicaTarget:
    """Parse a `--server` value (see the module docstring)."""
    target = target.strip()
    if not target:
        raise ReplicaError("server target is empty; give HOST:PORT, a comma-separated list of IP:PORT, or "
                           "dns:///NAME:PORT")
    if target.startswith("dns:"):
        return ReplicaTarget(target, (), True)
    parts = [p.strip() for p in target.split(",")]
    if len(parts) == 1:
        _split(parts[0])
        return ReplicaTarget(parts[0], (parts[0],), False)
    families = set()
    hosts = []
    for part in parts:
        host, port = _split(part)
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ReplicaError(f"replica {part!r}: a list of replicas takes IP addresses (gRPC resolves no names "
                               f"in a list); use dns:///NAME:PORT for a name with several addresses") from None
        families.add(ip.version)
        hosts.append(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    if len(families) > 1:
        raise ReplicaError(f"replicas mix IPv4 and IPv6 addresses: {parts}; use one family")
    if len(set(hosts)) != len(hosts):
        raise ReplicaError(f"replica list names an address twice: {parts}")
    scheme = "ipv6" if families == {6} else "ipv4"
    return ReplicaTarget(f"{scheme}:{','.join(hosts)}", tuple(parts), True)


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ReplicaError(f"server address {address!r} must be HOST:PORT (port 1..65535)")
    return host, int(port)


# The ModelIdentity fields that name a model: a change in any of them is another model. The server instance id is
# not among them (a restart of the same model, or another replica, changes only it).
MODEL_FIELDS: tuple[str, ...] = ("weight_hash", "policy_config_digest", "norm_stats_digest")


def model_changes(old: pb.ModelIdentity, new: pb.ModelIdentity) -> list[str]:
    """The MODEL_FIELDS whose values differ between two identities (empty: the same model)."""
    return [name for name in MODEL_FIELDS if getattr(old, name) != getattr(new, name)]


def describe_identity(identity: pb.ModelIdentity) -> str:
    """One line naming a model identity, every digest in full (so two of them can be compared by eye)."""
    return ", ".join(f"{name} {getattr(identity, name) or '-'}" for name in (*MODEL_FIELDS, "server_instance_id"))


# What must agree between replicas, with a readable name for the error.
_IDENTITY: tuple[tuple[str, Callable[[pb.PolicyMetadata], object]], ...] = (
    ("model_id", lambda m: m.model_id),
    ("weight_hash", lambda m: m.weight_hash),
    ("action_horizon", lambda m: m.action_horizon),
    ("control_fps", lambda m: m.control_fps),
    ("action_names", lambda m: tuple(m.action_names)),
    ("state_names", lambda m: tuple(m.state_names)),
    ("cameras", lambda m: tuple((c.name, c.height, c.width) for c in m.cameras)),
    # Last: a config or stats difference the readable fields above do not already name.
    ("identity.policy_config_digest", lambda m: m.identity.policy_config_digest),
    ("identity.norm_stats_digest", lambda m: m.identity.norm_stats_digest),
)


def check_interchangeable(metadata: Sequence[tuple[str, pb.PolicyMetadata]]) -> None:
    """Raise ReplicaError naming the field and the replicas that differ from the first one."""
    if len(metadata) < 2:
        return
    (first_name, first), rest = metadata[0], metadata[1:]
    for name, md in rest:
        for field, get in _IDENTITY:
            if get(md) != get(first):
                raise ReplicaError(
                    f"replicas are not interchangeable: {field} of {name} is {get(md)!r}, of {first_name} "
                    f"{get(first)!r}; serve the same checkpoint and config on every replica"
                )
