"""voicedrop: a drop-folder daemon that turns job manifests into speech."""

__version__ = "0.1.0"
