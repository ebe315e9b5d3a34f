"""The bot: commands written once, and thin adapters for the console, Telegram and Discord."""
