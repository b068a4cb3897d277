"""Pause Python's cyclic garbage collector around bulk loads of acyclic data.

Parsing a 100,000-block njet.conf or scanning 100,000 stored pairs allocates millions of small
objects; the cyclic collector then walks the growing heap again and again (a third of the
time), although none of these structures contain cycles. Reference counting still frees them.
Nesting and threads are handled with a counter: the collector comes back when the last pause
ends. Used by desired.py (njet.conf) and adapters/store/lego.py (the store scan).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_was_enabled = True


@contextmanager
def gc_paused() -> Iterator[None]:
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
