"""Management commands and the reports they print."""
