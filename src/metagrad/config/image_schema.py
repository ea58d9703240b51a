"""Config variants of the natural-image few-shot benchmarks, registered into the schema.

Task families (``task.family``), named as MMFewShot names its data sets: ``"cub"``,
``"mini-imagenet"``, ``"tiered-imagenet"`` (84x84 RGB, MMFewShot's pipeline),
``"cifar-fs"``, ``"fc100"`` (32x32 RGB, MetaOptNet's) and ``"folder"``, a user's own folder of
class folders (MMFewShot's pipeline at any input size). Each reads the cache that ``metagrad
data prepare NAME --root DIR`` writes; with ``task.root`` set, a run prepares that cache
itself on first use, so one ``metagrad train`` is all a user with the data needs.

Importing :mod:`metagrad.config` imports this module, which adds the classes below to
:data:`~metagrad.config.schema.TASK_CONFIGS`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from metagrad.config.rules import Problem, at_least
from metagrad.config.schema import TASK_CONFIGS, TaskConfig, config_class


@config_class
class ImageTaskConfig(TaskConfig):
    """Base of the natural-image families: N-way K-shot episodes of a prepared data set."""

    kind: ClassVar[str] = "classification"
    modality: ClassVar[str] = "image"
    channels: ClassVar[int] = 3  # RGB: the model's in_channels must match
    pipeline: ClassVar[str] = "mmfewshot"  # metagrad.tasks.augment: MMFEWSHOT or METAOPTNET
    # The data set as released; prepared into `cache` on first use (None: already prepared).
    root: str | None = None
    cache: str | None = None  # the prepared cache's folder (None: ~/.cache/metagrad)
    ways: int = 5  # classes per task (N)
    shots: int = 1  # support images per class (K)
    queries: int = 15  # query images per class
    augment: bool = True  # the training augmentation (the test transform is always applied)

    def problems(self) -> Iterator[Problem]:
        yield from at_least(self, 2, "ways")
        yield from at_least(self, 1, "shots", "queries")
        for key in ("root", "cache"):
            if getattr(self, key) == "":
                yield key, 'must be a directory path, got ""; leave the key out for the default'


@config_class
class CUBTaskConfig(ImageTaskConfig):
    """CUB-200-2011 birds, 100 / 50 / 50 classes (the split of Chen et al. 2019)."""

    family: ClassVar[str] = "cub"


@config_class
class MiniImageNetTaskConfig(ImageTaskConfig):
    """mini-ImageNet, Ravi & Larochelle's 64 / 16 / 20 classes of 600 images."""

    family: ClassVar[str] = "mini-imagenet"


@config_class
class TieredImageNetTaskConfig(ImageTaskConfig):
    """tiered-ImageNet, 351 / 97 / 160 classes in 20 / 6 / 8 categories (Ren et al. 2018)."""

    family: ClassVar[str] = "tiered-imagenet"


@config_class
class CIFARFSTaskConfig(ImageTaskConfig):
    """CIFAR-FS, 64 / 16 / 20 CIFAR-100 classes at 32x32 (Bertinetto et al. 2019)."""

    family: ClassVar[str] = "cifar-fs"
    pipeline: ClassVar[str] = "metaoptnet"


@config_class
class FC100TaskConfig(ImageTaskConfig):
    """FC100, CIFAR-100 split by superclass, 60 / 20 / 20 classes (Oreshkin et al. 2018)."""

    family: ClassVar[str] = "fc100"
    pipeline: ClassVar[str] = "metaoptnet"


@config_class
class FolderTaskConfig(ImageTaskConfig):
    """Your own images: ``root/<class>/*.jpg`` (or ``root/{train,val,test}/<class>/``), any
    sizes and modes, with the episodes, cache and augmentation of the built-in families."""

    family: ClassVar[str] = "folder"
    root: str  # one folder per class (the name is the class), or train/ val/ test/ of them
    image_size: int = 84  # the model's input side (stored at 8/7 of it: test crops the centre)
    val_fraction: float = 0.2  # classes held out for validation, without train/ val/ test/
    test_fraction: float = 0.2  # classes held out for the test, likewise
    split_seed: int = 0  # seeds that draw of the classes

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        yield from at_least(self, 8, "image_size")
        for key in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, key) < 1.0:
                yield key, f"must be a share of the classes in (0, 1), got {getattr(self, key)}"


IMAGE_FAMILIES = (
    CUBTaskConfig,
    MiniImageNetTaskConfig,
    TieredImageNetTaskConfig,
    CIFARFSTaskConfig,
    FC100TaskConfig,
    FolderTaskConfig,
)
for _cls in IMAGE_FAMILIES:
    TASK_CONFIGS.add(_cls.family, _cls)
