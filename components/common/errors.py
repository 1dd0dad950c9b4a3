"""The error every step raises for bad input: the CLI prints its message and exits non-zero."""


class DalError(Exception):
    """Bad input or a failed precondition; the message names the file, URI or field at fault."""
