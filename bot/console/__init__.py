"""The console: the bot in a terminal, no token needed."""
