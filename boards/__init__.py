"""Board profiles (``*.yaml``), installed as package data beside the runtime; see ``runtime/boards.py``."""
