"""Options that both the fence agent and the evacuation worker read, declared once.

Host return (:mod:`nova_evacuate.host_return`) is applied by ``fence_nova on`` and by the
NovaEvacuate worker, both map a cluster node name to a Nova host, and both need each host's
storage addresses (the fence blocklists them, the engine checks no disk is still held from
them). Each surface has its
own syntax (a fence-agents parameter in the CIB, an oslo.config option in
``openstack-ha.conf``), so each option is declared here once (name, default, help) and
rendered into both; set the same value in both places.

No imports: ``fence_nova metadata`` reads this module and must stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SharedOption:
    name: str
    summary: str  # one line: the fence parameter's shortdesc
    help: str  # the full text: the fence parameter's longdesc, the oslo option's help
    default: bool | str | None = None


LEAVE_DISABLED = SharedOption(
    "leave_disabled",
    "Leave the nova-compute service disabled after unfencing",
    "When a fenced host returns, clear its forced-down state but leave its nova-compute"
    " service disabled, so an operator enables it by hand (openstack compute service set"
    " --enable). Read by fence_nova on (unfencing) and by the NovaEvacuate worker, which"
    " takes this step once the returning nova-compute reports up: set the fence device's"
    " leave_disabled and [evacuation] leave_disabled alike.",
    default=False,
)

DOMAIN = SharedOption(
    "domain",
    "DNS domain in which hosts live",
    "Appended to the node name to form the Nova host name, when the cluster names the"
    " compute hosts short and Nova by FQDN: the cluster node compute-1 is the Nova host"
    " compute-1.<domain>. Read by fence_nova and by the NovaEvacuate worker: set the fence"
    " device's domain and [cloud] domain alike.",
)

STORAGE_MAP = SharedOption(
    "storage_map",
    "Storage addresses of each host: host=address[+address][,host=...]",
    "Each compute host's addresses on the storage network(s), IPv4 or IPv6 literals, several"
    " joined with '+' (compute-1=10.0.1.11+10.0.2.11,compute-2=fd00:1::12); each host once."
    " fence_nova blocklists them (storage_fence=ceph); the evacuation engine ([storage])"
    " refuses to rebuild a server whose disk one of the failed host's addresses still holds."
    " Set the fence device's storage_map and [storage] storage_map alike.",
)
