"""BLAS threads for edgekit's host-side matrix products.

The head's products are small (one context: 64 x 10k); OpenBLAS's default
threading spends more than it saves on them and steals cores from the app.
Measured on a busy 2-core box: 17 ms per suggestion with default threads,
0.2 ms with one. The limit applies only inside edgekit's own calls.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, ContextManager

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None


def blas_threads(threads: int | None) -> ContextManager:
    """Limit BLAS to ``threads`` inside the block (``None``: leave it alone)."""
    global _controller
    if threads is None:
        return contextlib.nullcontext()
    if _controller is None:  # scanning loaded libraries costs ~ms: once per process
        from threadpoolctl import ThreadpoolController  # here: a process that only suggests never needs it

        _controller = ThreadpoolController()
    return _controller.limit(limits=threads, user_api="blas")
