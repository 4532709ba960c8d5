"""The one exception type users see: a plain message saying what to do."""


class SimlibError(Exception):
    """An error the user can fix (bad path, corrupt image, mismatched index, no network).

    The command line prints its message on one line and exits with status 1;
    anything else escaping is a bug in simlib.
    """
