"""Benchmarks that ship with voxgate: ``voxgate bench providers`` compares engines."""
