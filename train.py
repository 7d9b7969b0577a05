"""Train and test one segmenter: `python train.py upsampler=pixelshuffle backbone=mobilenet`.

Sweeps: `python train.py -m upsampler=bilinear,carafe seed=0,1,2` or `-m experiment=NAME`.
"""

import hydra
from omegaconf import DictConfig

from upbench.runner import train


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
