"""The evacuation engine and everything that talks to Nova.

Importing this package must stay cheap: the compute-node monitor path imports
``nova_evacuate.logsetup`` through it, so nothing here imports openstacksdk.
"""
