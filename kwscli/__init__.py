"""kws: train, compress, evaluate and run small keyword spotters."""

__version__ = "0.1.0"
