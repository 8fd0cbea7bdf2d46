"""wrapdock: containers and container networks built from real commands, printed as they run."""

__version__ = "0.1.0"
