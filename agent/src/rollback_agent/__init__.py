"""Rollback agent: answers Alertmanager webhooks by rolling a host back."""

__version__ = "0.1.0"
