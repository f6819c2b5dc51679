"""The paper's numbers, in one leaf module that imports nothing from the package.

He et al. (2020), Sec. 2.1-2.3: 84x84 patches, 11 defocus levels 2 µm apart (0..20 µm), a
12th 'bg' class, 16-bit counts divided by 65535 for DelpNet.
"""

PATCH_SIZE = 84  #: DelpNet's patch side in pixels (Sec. 2.2)
NUM_LEVELS = 11  #: defocus levels 0..10
LEVEL_STEP_UM = 2.0  #: defocus increment per level, µm (level l is z = 2 l µm)
BG_LABEL = 11  #: the 'bg' class, after the 11 levels
NUM_CLASSES = 12  #: levels 0..10 and bg
COUNT_SCALE = 65535.0  #: the paper's linear normalisation (16-bit full scale)
MODES = ("dv", "di", "oracle", "soft")  #: `restore` modes (pipeline.restore documents each)

__all__ = ["BG_LABEL", "COUNT_SCALE", "LEVEL_STEP_UM", "MODES", "NUM_CLASSES", "NUM_LEVELS", "PATCH_SIZE"]
