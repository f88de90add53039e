"""Every agent the suite ships: where Pacemaker finds it, and its meta-data.

One list feeds the installer (``openstack-ha-install``) and the committed
``resource-agents.xml``, so an agent cannot be shipped without both.
Regenerate the document from the repository's top with
``python -m agents.catalog --write``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

OCF_PROVIDER = "openstack-ha"
OCF_DIR = f"usr/lib/ocf/resource.d/{OCF_PROVIDER}"
FENCE_DIR = "usr/sbin"
ALERT_DIR = "usr/lib/openstack-ha"
DOCUMENT = Path("resource-agents.xml")


@dataclasses.dataclass(frozen=True)
class ShippedAgent:
    # "ocf", "fence", "alert" (a Pacemaker alert agent) or "tool" (an operator command);
    # the last two have no meta-data
    kind: str
    name: str  # file name Pacemaker looks for
    module: str  # module with main() and the declaration

    @property
    def path(self) -> str:
        """Install path relative to the root file system."""
        where = {"ocf": OCF_DIR, "alert": ALERT_DIR}.get(self.kind, FENCE_DIR)
        return f"{where}/{self.name}"

    def metadata_element(self) -> ET.Element:
        module = importlib.import_module(self.module)
        if self.kind == "ocf":
            return module.AGENT.metadata_element()
        from fence_compute.protocol import metadata_xml

        return ET.fromstring(metadata_xml(module.AGENT))


SHIPPED = (
    ShippedAgent("ocf", "ComputeLiveness", "agents.compute_liveness"),
    ShippedAgent("ocf", "NovaEvacuate", "agents.nova_evacuate_agent"),
    ShippedAgent("fence", "fence_nova", "fence_compute.fence_nova"),
    ShippedAgent("alert", "timeline_alert", "agents.timeline_alert"),
    ShippedAgent("tool", "nova-evacuate", "nova_evacuate.cli"),
    ShippedAgent("tool", "openstack-ha-watchdog", "nova_evacuate.watchdog_cli"),
    ShippedAgent("tool", "openstack-ha-timeline", "openstack_ha.timeline"),
)


def document() -> str:
    """All shipped agents' meta-data in one reviewed document."""
    root = ET.Element("resource-agents")
    root.append(ET.Comment(" Generated from the code by agents.catalog; do not edit by hand. "))
    for agent in SHIPPED:
        if agent.kind in ("tool", "alert"):
            continue
        element = agent.metadata_element()
        element.set("class", "ocf" if agent.kind == "ocf" else "stonith")
        if agent.kind == "ocf":
            element.set("provider", OCF_PROVIDER)
        root.append(element)
    ET.indent(root)
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the document")
    parser.add_argument("--check", action="store_true", help="exit 1 if the document differs")
    parser.add_argument("--path", type=Path, default=DOCUMENT, help="default: %(default)s")
    args = parser.parse_args(argv)
    text = document()
    if args.write:
        args.path.write_text(text, encoding="utf-8")
        print(f"wrote {args.path}")
    elif args.check:
        if not args.path.exists() or args.path.read_text(encoding="utf-8") != text:
            print(f"{args.path} is out of date: run python -m agents.catalog --write")
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
