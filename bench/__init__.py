"""The benchmark: mqd against its peers, same workloads, same load generator, one machine.

Run it with ``python -m bench`` (see the README's Performance section and docs/performance.md).
"""
