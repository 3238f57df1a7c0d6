"""Destinations: the delivery engine (each destination follows the processed log with its
own checkpoint and queue) and one module per connector."""
