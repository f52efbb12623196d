"""The library's exceptions. The command line turns these into messages and exit codes."""


class TxmError(Exception):
    """Base class of every error txm reports to a person.

    ``exit_code`` is what the command line exits with: 1 for a failure,
    2 for a usage or configuration error.
    """

    exit_code = 1


class ConfigError(TxmError):
    """A configuration file or value is wrong."""

    exit_code = 2


class DatabaseError(TxmError):
    """The database is missing, unreachable, or lacks txm's tables."""


class NotFound(TxmError):
    """A named unit, user or other object does not exist."""


class InvalidValue(TxmError):
    """A value given by a person (a unit code, a password, a date) is not acceptable."""

    exit_code = 2
