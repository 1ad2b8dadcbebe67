"""The daemon: watcher → spool → scheduler → executor, driven by the service."""
