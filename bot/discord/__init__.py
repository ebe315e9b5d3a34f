"""Discord: the adapter (slash and prefix commands, streamed edits) and its persistent buttons."""
