from upbench.decoders.unet import SegNetDecoder, UNetDecoder, build_upsampler

__all__ = ["SegNetDecoder", "UNetDecoder", "build_upsampler"]
