"""The life of the process: serve, start-up checks, the shared runtime, status, health, metrics, logs, secrets."""
