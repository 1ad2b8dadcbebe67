"""The HTTP API beside the drop folder: it only talks to the spool."""
