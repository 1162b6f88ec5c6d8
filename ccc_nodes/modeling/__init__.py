"""Neural network modules only: no file, network or framework I/O lives here."""

from .ccc import DECODERS, CCCNet, Decoder, SkipDecoder, build_encoder

__all__ = ["DECODERS", "CCCNet", "Decoder", "SkipDecoder", "build_encoder"]
