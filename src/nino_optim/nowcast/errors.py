"""The one error every way of loading a nowcaster raises when it cannot produce one."""
from __future__ import annotations


class NowcasterLoadError(ValueError):
    """Weights or configuration that cannot be turned into a nowcaster; the message says what to do instead."""
