"""One sans-I/O codec per device protocol: bytes or text in → typed events; events → frames.

Codecs never touch a socket; the transports in :mod:`voxgate.server.transports` move the bytes.
"""
