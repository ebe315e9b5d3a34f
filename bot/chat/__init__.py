"""The chat logic every platform shares: commands, quotas, parsing, replies, buttons and the Spanish texts."""
