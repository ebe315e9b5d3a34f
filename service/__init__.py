"""Platform-neutral services shared by the chat adapters and the console."""
