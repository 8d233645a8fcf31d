"""The built-in datamodules (installed as ``dcl.datamodules``; registered by entry point)."""
