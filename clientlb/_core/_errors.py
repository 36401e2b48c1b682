"""Errors raised by the core. The shells map ``NoUpstream`` to their own types."""


class ConfigError(ValueError):
    """A configuration value is invalid. Raised at construction, naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NoUpstream(LookupError):
    """The pool has no upstream that may serve this request."""
