"""Train and test one segmenter: `python train.py upsampler=pixelshuffle backbone=mobilenet`.

Sweeps: `python train.py -m upsampler=bilinear,carafe seed=0,1,2` or `-m experiment=NAME`.
"""

import sys

import hydra
from omegaconf import DictConfig

from upbench.runner import is_multirun, train
from upbench.validation import ConfigError


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except ConfigError as error:
        if is_multirun():  # the sweep stops on it, and its launcher reports it
            raise
        # A refused configuration is the user's to fix, not a crash: one message, no traceback.
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
