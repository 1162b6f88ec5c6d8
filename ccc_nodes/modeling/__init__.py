"""Neural network modules only: no file, network or framework I/O lives here."""

from .ccc import CCCNet, Decoder, build_encoder

__all__ = ["CCCNet", "Decoder", "build_encoder"]
