"""The evacuation engine and everything that talks to Nova.

Importing this package must stay cheap: ``fence_compute`` imports it on every fence
action, so nothing here imports openstacksdk at import time.
"""
