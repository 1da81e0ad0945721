"""The product: the ``ditcache`` command (demo, bench, calibrate, info) and what only it uses.

Layer rule: ``tools`` may import every other layer; nothing in ditcache imports it.
"""
