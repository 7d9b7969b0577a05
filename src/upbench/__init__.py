"""upbench: compare feature upsamplers in encoder-decoder segmentation networks."""

__version__ = "0.1.0"
