"""Stages, engines, audio and the residency manager that places their models."""
