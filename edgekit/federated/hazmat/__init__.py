"""Sharp tools: the primitives the ``edgekit.federated`` recipes are built from.

Use them only to build another transport (the Flower apps do) or to test
one; each does one step and trusts its caller for every other:

- ``encode_delta``, ``pack_payload``, ``seal`` and ``make_update`` seal the
  arrays they are given: ``encode_delta``, ``pack_payload`` and ``seal`` do
  not clip, and none of them removes personal-word slots (``shared_delta``
  does) or checks the number of examples claimed;
- ``add_gaussian_noise`` and ``add_central_noise`` do not clip: their noise
  protects nothing unless the delta was clipped to the same ``clip_norm``
  (``privatize`` clips, then adds noise);
- ``parse_update`` reads a header that is not authenticated yet;
  ``open_update`` checks one update but keeps no replay ledger unless given one,
  and ``open_signed_update`` counts a device once only in the ``seen_devices`` it is given;
- ``Aggregator`` checks shapes only: run ``validate_delta`` and
  ``validate_rows`` (the per-word bound) on each delta first, and cap the
  weights yourself; ``parse_header`` reads what a file's first bytes claim.

For a model's update use ``edgekit.federated.export_update``; on the server,
``aggregate_updates`` and ``install_delta``.
"""
from __future__ import annotations

from .aggregator import Aggregator, add_central_noise
from .delta import (
                    Delta,
                    add_gaussian_noise,
                    clip_delta,
                    decode_delta,
                    delta_norm,
                    encode_delta,
                    encoded_size,
                    norm_bound,
                    privatize,
                    row_norm_bound,
                    shared_delta,
                    validate_delta,
                    validate_rows,
)
from .update import (
                    MAGIC,
                    UpdateHeader,
                    check_header,
                    make_update,
                    new_update_id,
                    open_signed_update,
                    open_update,
                    pack_payload,
                    parse_header,
                    parse_update,
                    seal,
)

__all__ = [
    "MAGIC", "Aggregator", "Delta", "UpdateHeader", "add_central_noise", "add_gaussian_noise", "check_header",
    "clip_delta", "decode_delta", "delta_norm", "encode_delta", "encoded_size", "make_update", "new_update_id",
    "norm_bound", "open_signed_update", "open_update", "pack_payload", "parse_header", "parse_update", "privatize",
    "row_norm_bound", "seal",
    "shared_delta", "validate_delta", "validate_rows",
]
