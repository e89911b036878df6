"""salespulse: a real-time sales metrics engine (CRM webhooks -> Kafka -> Faust -> Redis, Prometheus, metric topics)."""

__version__ = "0.1.0"
