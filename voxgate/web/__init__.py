"""The browser page ``/`` ("talk to voxgate"): static files, no build step.

The page speaks the relay protocol (``docs/protocols/relay.md``) from plain JS modules in
``static/``; this package only serves them.
"""

from voxgate.web.routes import STATIC_DIR, routes

__all__ = ["STATIC_DIR", "routes"]
