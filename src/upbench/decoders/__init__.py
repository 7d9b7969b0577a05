from upbench.decoders.fpn import FPNDecoder
from upbench.decoders.segformer import SegFormerDecoder
from upbench.decoders.unet import SegNetDecoder, UNetDecoder

__all__ = ["FPNDecoder", "SegFormerDecoder", "SegNetDecoder", "UNetDecoder"]
