"""The error types pylog raises, in one place so callers know what to catch."""


class PylogError(Exception):
    """Base class of every error pylog reports to dockerd or the user."""


class OptionError(PylogError):
    """A log-opt is unknown or malformed; the message names the option and what is allowed."""


class RequestError(PylogError):
    """A request from dockerd is malformed (bad JSON, missing or invalid field)."""


class UnknownContainerError(PylogError):
    """ReadLogs for a container pylog holds no logs for."""
