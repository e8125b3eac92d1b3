"""The top floor: the ``lmc`` command, the demo, ``reproduce``/``report`` and the sweep executors.

Everything here composes the stages below (beton_builders <- pipelines <- experiments, and
analysis); no stage imports this package.
"""
