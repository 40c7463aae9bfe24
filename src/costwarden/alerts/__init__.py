"""Alert delivery (log, JSON webhook, e-mail) off the request path, de-duplicated in the ledger."""

from costwarden.alerts.channels import ALERT_LOGGER, CHANNEL_KINDS, channel_kind
from costwarden.alerts.dispatcher import AlertDispatcher, AlertLog, DeliveryCounters, alert_record
from costwarden.alerts.mail import SmtpSettings

__all__ = [
    "ALERT_LOGGER",
    "CHANNEL_KINDS",
    "AlertDispatcher",
    "AlertLog",
    "DeliveryCounters",
    "SmtpSettings",
    "alert_record",
    "channel_kind",
]
