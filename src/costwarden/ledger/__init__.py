"""The usage ledger and every SQL table of costwarden (SQLite or PostgreSQL, via SQLAlchemy Core)."""

from costwarden.ledger.audit import AlertRecord, PolicyVersion
from costwarden.ledger.credentials import KeyRecord, TokenRecord, hash_secret
from costwarden.ledger.engine import DEFAULT_URL
from costwarden.ledger.ledger import Ledger
from costwarden.ledger.outage import WhenDown
from costwarden.ledger.queries import TotalsRow

__all__ = [
    "DEFAULT_URL",
    "AlertRecord",
    "KeyRecord",
    "Ledger",
    "PolicyVersion",
    "TokenRecord",
    "TotalsRow",
    "WhenDown",
    "hash_secret",
]
