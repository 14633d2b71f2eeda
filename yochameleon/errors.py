"""User-facing errors: each message names the file or setting at fault and the fix."""


class YoChameleonError(Exception):
    """Base class for errors a user can act on."""


class ConceptDataError(YoChameleonError):
    """A concept's photos, pools or conversation files are missing or malformed."""


class ImageError(YoChameleonError):
    """An image file cannot be read."""


class TokenLayoutError(YoChameleonError):
    """Token ids requested for a concept are unavailable or collide (raised by `concept/tokens.py` and by
    `model/personalized.py`, hence here; `yochameleon.concept.tokens` re-exports it)."""


class BackboneError(YoChameleonError):
    """The backbone directory is missing or not a usable checkpoint, or a token it should have is absent (raised
    by `model/backbone.py` and by the family parts beside it, hence here; `yochameleon.model.backbone` re-exports
    it)."""
