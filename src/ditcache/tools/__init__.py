"""The product: the ``ditcache`` command (demo, bench, calibrate, info) and what only it uses.

* :mod:`~ditcache.tools.cli`: the parser and :func:`~ditcache.tools.cli.main` (the ``ditcache`` script and
  ``python -m ditcache``); only ``ditcache.__main__`` and the script entry point import it;
* :mod:`~ditcache.tools.demo`, :mod:`~ditcache.tools.bench` (peers, sweeps, verdicts, report, command) and
  :mod:`~ditcache.tools.calibrate_cmd`: the sub-commands;
* :mod:`~ditcache.tools.evaluation`: how demo and bench run and measure configurations on the bundled model;
* :mod:`~ditcache.tools.plots`, :mod:`~ditcache.tools.output` (output directory, progress, tables) and
  :mod:`~ditcache.tools.argtypes`: what the sub-commands share;
* :mod:`~ditcache.tools.hook_overhead`: the hook microbenchmark.

Layer rule: ``tools`` may import every other layer; nothing in ditcache imports it.
"""
