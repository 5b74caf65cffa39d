"""The showcase run by ``make demo``."""
