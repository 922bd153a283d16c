"""Board profiles (``*.yaml``), installed as package data beside the runtime; see ``runtime/system/boards.py``."""
