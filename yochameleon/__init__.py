"""yochameleon: personalize Chameleon / Anole to your own subject (Yo'Chameleon)."""

__version__ = "0.1.0"
