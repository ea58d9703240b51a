"""metagrad.data: downloading, reading, splitting and caching few-shot image data sets (Omniglot;
CUB, mini-ImageNet, tiered-ImageNet, CIFAR-FS and FC100)."""

from metagrad.data.cifar import read_cifar_fs, read_fc100
from metagrad.data.cub import read_cub
from metagrad.data.download import ChecksumError, DownloadError, download, md5_of_file
from metagrad.data.imagenet import read_mini_imagenet, read_tiered_imagenet
from metagrad.data.natural import ImageSplit
from metagrad.data.omniglot import (
    ALPHABETS,
    OMNIGLOT_ZIPS,
    OmniglotData,
    alphabet_of,
    download_omniglot,
    load_omniglot,
    preprocess,
    read_omniglot_folder,
    read_omniglot_npz,
    read_omniglot_zip,
)
from metagrad.data.prepare import (
    NATURAL_SETS,
    LayoutError,
    load_prepared,
    prepare,
    prepared_from,
)
from metagrad.data.safe_pickle import load_pickle
from metagrad.data.splits import (
    DEFAULT_ROTATIONS,
    MAML_SPLIT_SEED,
    SPLITS,
    ClassSet,
    omniglot_split,
    split_char_ids,
)

__all__ = [
    "ALPHABETS",
    "DEFAULT_ROTATIONS",
    "MAML_SPLIT_SEED",
    "NATURAL_SETS",
    "OMNIGLOT_ZIPS",
    "SPLITS",
    "ChecksumError",
    "ClassSet",
    "DownloadError",
    "ImageSplit",
    "LayoutError",
    "OmniglotData",
    "alphabet_of",
    "download",
    "download_omniglot",
    "load_omniglot",
    "load_pickle",
    "load_prepared",
    "md5_of_file",
    "omniglot_split",
    "prepare",
    "prepared_from",
    "preprocess",
    "read_cifar_fs",
    "read_cub",
    "read_fc100",
    "read_mini_imagenet",
    "read_omniglot_folder",
    "read_omniglot_npz",
    "read_omniglot_zip",
    "read_tiered_imagenet",
    "split_char_ids",
]
