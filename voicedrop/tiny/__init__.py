"""Tiny random-initialised models in each engine's real checkpoint layout.

The test suite and `voicedrop selftest` build them with these functions and
load them back through the engines' real loading paths, so a machine with no
downloaded weights (CI, a fresh GPU workstation) still exercises every line
that will load the published checkpoints. They speak noise, not words.
"""
