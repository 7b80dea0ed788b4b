"""Engines behind the capability seams of :mod:`voxgate.core.capabilities`, one module each.

Each module has a ``create(settings_section, models)`` factory, registered by name in
:mod:`voxgate.core.registry`.
"""
