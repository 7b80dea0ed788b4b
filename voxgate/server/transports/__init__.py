"""Thin transports: sockets and HTTP around the sans-I/O codecs of :mod:`voxgate.protocols`."""
