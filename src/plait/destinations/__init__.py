"""Destinations: the delivery engine (each destination follows the processed log with its
own checkpoint and queue) and one module per connector. Importing it adds its steps to
privacy deletions (``plait.destinations.erasure``): the server imports it, and so does
``plait privacy request``."""

from plait.destinations.erasure import register

register()
