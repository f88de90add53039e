"""The committed interface documents match the code: agents' meta-data and sample config.

An interface change therefore shows up as a reviewed diff of
``resource-agents.xml`` or the sample config, as fence-agents keeps golden
metadata. Regenerate with ``python -m agents.catalog --write`` and
``oslo-config-generator --config-file etc/oslo-config-generator/openstack-ha.conf``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import catalog

REPO = Path(__file__).resolve().parents[2]
DTD = Path("/usr/share/resource-agents/ra-api-1.dtd")


def test_resource_agents_xml_is_regenerated_from_the_code():
    committed = (REPO / "resource-agents.xml").read_text(encoding="utf-8")
    assert catalog.document() == committed, "run: python -m agents.catalog --write"


def test_resource_agents_xml_lists_every_shipped_agent():
    root = ET.parse(REPO / "resource-agents.xml").getroot()
    names = [(a.get("class"), a.get("name")) for a in root.findall("resource-agent")]
    assert names == [("ocf", "ComputeLiveness"), ("ocf", "NovaEvacuate"), ("stonith", "fence_nova")]


@pytest.mark.skipif(not DTD.exists(), reason="resource-agents' ra-api-1.dtd is not installed")
@pytest.mark.parametrize("agent", [a for a in catalog.SHIPPED if a.kind == "ocf"], ids=str)
def test_each_ocf_agent_in_the_document_is_valid_against_ra_api_dtd(agent, tmp_path):
    doc = tmp_path / f"{agent.name}.xml"
    doc.write_text(ET.tostring(agent.metadata_element(), encoding="unicode"))
    done = subprocess.run(
        ["xmllint", "--noout", "--dtdvalid", str(DTD), str(doc)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_sample_config_is_regenerated_from_the_options(tmp_path):
    # this environment's generator: another one on PATH would not see our entry point
    generator = str(Path(sys.executable).parent / "oslo-config-generator")
    if not Path(generator).exists():
        generator = shutil.which("oslo-config-generator") or generator
    out = tmp_path / "sample.conf"
    subprocess.run(
        [generator, "--namespace", "openstack_ha", "--wrap-width", "79", "--output-file", str(out)],
        check=True, capture_output=True,
        # the options of this tree, not of the copy installed in the environment
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    committed = REPO / "etc/openstack-ha/openstack-ha.conf.sample"
    assert out.read_text() == committed.read_text(), (
        "run: oslo-config-generator --config-file etc/oslo-config-generator/openstack-ha.conf"
    )


def test_every_option_has_help_text():
    from nova_evacuate.conf import opts

    for group, options in opts.list_opts():
        for opt in options:
            assert opt.help and len(opt.help.strip()) > 10, f"[{group.name}] {opt.name}"


@settings(max_examples=500)
@given(st.text(max_size=60))
def test_the_metadata_escapes_text_as_xml_sax_does(text: str) -> None:
    """fence_compute's own escape (xml.sax.saxutils costs every fence action its imports)."""
    from xml.sax.saxutils import escape

    from fence_compute.protocol import documents

    entities = {'"': "&quot;", "'": "&apos;"}
    assert documents._xml_escape(text) == escape(text)
    assert documents._xml_escape(text, entities) == escape(text, entities)
