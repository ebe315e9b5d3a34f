"""The `cervantes` command line."""
