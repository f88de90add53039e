"""OCF resource agents of openstack-instance-ha (provider ``openstack-ha``)."""
