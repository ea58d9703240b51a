"""metagrad.data: downloading, reading and splitting few-shot image data sets (Omniglot)."""

from metagrad.data.download import ChecksumError, DownloadError, download, md5_of_file
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
    "OMNIGLOT_ZIPS",
    "SPLITS",
    "ChecksumError",
    "ClassSet",
    "DownloadError",
    "OmniglotData",
    "alphabet_of",
    "download",
    "download_omniglot",
    "load_omniglot",
    "md5_of_file",
    "omniglot_split",
    "preprocess",
    "read_omniglot_folder",
    "read_omniglot_npz",
    "read_omniglot_zip",
    "split_char_ids",
]
