"""Adapters every package of the suite uses: Pacemaker's command-line tools
(:mod:`openstack_ha.pacemaker`), logging (:mod:`openstack_ha.logsetup`) and the recovery
timeline (:mod:`openstack_ha.timeline`).

``agents``, ``fence_compute`` and ``nova_evacuate`` depend on this package; it depends on
none of them. Importing it must stay cheap: the compute-node monitor runs every few
seconds and imports these modules, so nothing here imports openstacksdk or oslo at
import time.
"""
