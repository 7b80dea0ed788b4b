"""The core: events, audio helpers, errors, capability seams and configuration.

Everything else (pipeline, providers, protocols) depends on this package; it depends on nothing of
voxgate's own.
"""
