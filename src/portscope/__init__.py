"""portscope: Linux port and socket inspector."""

__version__ = "0.1.0"
