"""User-facing errors: the CLI prints these as one line, never as a traceback."""


class SilhouetteError(Exception):
    """A user mistake or missing resource; the message says what is wrong and what to do."""
