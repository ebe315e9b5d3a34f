"""Telegram: the adapter, the outbox that delivers within the flood limits, and inline mode."""
