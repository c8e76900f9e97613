"""One exception type for bad input. The CLI turns it into one line on stderr and exit code 2."""


class XomniError(Exception):
    """A problem with the user's input (file, option, checkpoint) that deserves one clear line, not a traceback."""
