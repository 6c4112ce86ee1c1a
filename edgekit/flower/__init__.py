"""Federated rounds on Flower: the device runtime as a ClientApp, the project's aggregation as a strategy.

- ``client_app``: ``EdgeClient`` (personalize, clip, optionally noise, send the
  shared-head delta) and ``app`` for ``flower-supernode``;
- ``server_app``: ``app`` for ``flower-superlink`` runs, SecAgg+ as a setting;
- ``strategy``: ``EdgeStrategy``, checks and aggregation from ``edgekit.federated``;
- ``partitions``: non-IID clients built from corpora (one writer each);
- ``simulate``: many devices on one machine with Flower's simulation engine.

Needs the ``flower`` extra: ``pip install 'edgekit[flower]'``.
"""
