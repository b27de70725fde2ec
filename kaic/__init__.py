"""kaic: the command-line tool for the National AI Computing Center."""

__version__ = "0.1.0"
