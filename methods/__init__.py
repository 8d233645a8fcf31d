"""The built-in deep clustering methods (installed as ``dcl.methods``; registered by entry point)."""
