"""Errors raised for bad input: one clear sentence naming the input and the fix."""


class MMSegError(Exception):
    """Base class of every error the library raises on purpose.

    The message is meant for the user as it is: it names the offending input and says what to do.
    The command line prints it without a traceback.
    """


class InputError(MMSegError, ValueError):
    """An image, label map, dataset or argument that cannot be used."""


class BundleError(MMSegError):
    """A model bundle that is missing, incomplete, tampered with or too new."""


class ConfigError(MMSegError, ValueError):
    """A training configuration or dataset description that is invalid."""


class OutputError(MMSegError):
    """An output that cannot be written: a full disk, a read-only folder, a file in the way."""
