"""The one exception inside the alerts package; it never leaves the dispatcher."""

from __future__ import annotations


class DeliveryFailed(Exception):
    """A notification could not be delivered to one target (the message says why)."""
