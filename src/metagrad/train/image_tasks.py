"""The natural-image task families: a prepared data set -> episode samplers.

A run reads ``metagrad data prepare``'s memory-mapped cache (nothing is decoded during
training). With ``task.root`` set, the cache is prepared from it first when it is missing or
was prepared from another root, so ``metagrad train`` alone takes a user from the released
files to a trained model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from metagrad.config import IMAGE_FAMILIES, EvalSettings, ExperimentConfig, ImageTaskConfig
from metagrad.config.image_schema import FolderTaskConfig
from metagrad.data import ImageSplit, load_prepared, prepare, prepared_from
from metagrad.data.folder import prepare_folder
from metagrad.errors import UsageError
from metagrad.tasks.augment import METAOPTNET, MMFEWSHOT, ImagePipeline
from metagrad.tasks.images import LabelledEpisodeSampler
from metagrad.tasks.preprocess import Preprocessing
from metagrad.train.rng import eval_seed
from metagrad.types import TaskBatch

PIPELINES: dict[str, ImagePipeline] = {"mmfewshot": MMFEWSHOT, "metaoptnet": METAOPTNET}


def prepared_splits(
    task: ImageTaskConfig, log: Callable[[str], None] = print
) -> dict[str, ImageSplit]:
    """The splits of ``task``'s data set from its cache, prepared from ``task.root`` first if
    the cache is missing or was prepared from another root."""
    if task.root is not None:
        root = Path(task.root).expanduser()
        if prepared_from(task.family, task.cache) != root.resolve():
            log(f"[data] preparing {task.family} from {root} (once; later runs read the cache)")
            for line in prepare(task.family, root, task.cache, lambda m: log(f"[data] {m}")):
                log(f"[data] {line}")
    try:
        return load_prepared(task.family, task.cache)
    except UsageError as e:
        raise UsageError(f"{e}, or set task.root=DIR") from None


def pipeline_of(task: ImageTaskConfig) -> ImagePipeline:
    """The pipeline of ``task``'s family: MMFewShot's or MetaOptNet's; a user's folder gets
    MMFewShot's at its input side, resized at test to 8/7 of it (as 84 from 96)."""
    if isinstance(task, FolderTaskConfig):
        side = task.image_size
        return dataclasses.replace(MMFEWSHOT, size=side, resize=round(side * 8 / 7))
    return PIPELINES[task.pipeline]


def image_preprocessing(task: ImageTaskConfig) -> Preprocessing:
    """How one image file becomes the input the test transform makes of a stored training
    image: RGB, short side to the pipeline's test size (its input side when it has none: the
    CIFAR families are stored at their input size) by Pillow's bilinear filter as the cache was
    made, the centre square, normalised (the record ``metagrad.load`` and ``metagrad adapt``
    use, :mod:`metagrad.tasks.preprocess`)."""
    pipeline = pipeline_of(task)
    return Preprocessing(
        pipeline.size,
        3,
        resize=pipeline.resize or pipeline.size,
        resample="bilinear",
        mean=pipeline.mean,
        std=pipeline.std,
    )


def folder_splits(task: FolderTaskConfig, log: Callable[[str], None] = print):
    """A user's folder data set, prepared (once per change of its files) at 8/7 of the input
    side, as the 84x84 families are stored at 96."""
    pipeline = pipeline_of(task)
    splits = prepare_folder(
        task.root,
        pipeline.resize,
        task.cache,
        fractions=(task.val_fraction, task.test_fraction),
        seed=task.split_seed,
        log=lambda m: log(f"[data] {m}"),
    )
    return splits, pipeline


def named_splits(task: ImageTaskConfig, log: Callable[[str], None] = print):
    return prepared_splits(task, log), PIPELINES[task.pipeline]


# task.family -> (splits, pipeline): the published data sets, and a user's folder.
IMAGE_DATA: dict[str, Callable] = {cls.family: named_splits for cls in IMAGE_FAMILIES}
IMAGE_DATA["folder"] = folder_splits


def image_tasks(cfg: ExperimentConfig, ev: EvalSettings):
    """The training stream, fixed validation / test episodes and input shape of ``cfg``."""
    task = cfg.task
    assert isinstance(task, ImageTaskConfig)
    splits, pipeline = IMAGE_DATA[task.family](task)

    def sampler(split: str, shots: int, queries: int, seed: int, augment: bool):
        s = splits[split]
        try:
            return LabelledEpisodeSampler(
                s.images,
                s.labels,
                task.ways,
                shots,
                queries,
                pipeline,
                augment=augment,
                seed=seed,
                split=split,
                class_names=s.class_names,
            )
        except ValueError as e:
            keys = "task" if split == "train" else "eval"
            raise UsageError(
                f"{task.family}: {e} (keys task.ways, {keys}.shots, {keys}.queries)"
            ) from None

    stream = sampler("train", task.shots, task.queries, cfg.seed, task.augment)
    # Validation episodes are shaped as the test's: MMFewShot validates on the test protocol.
    samplers = {
        split: sampler(split, ev.shots, ev.queries, eval_seed(cfg, split), False)
        for split in ("val", "test")
    }

    def fixed(split: str, start: int, count: int) -> TaskBatch:
        return samplers[split].episodes(range(start, start + count))

    return stream, fixed, (3, pipeline.size, pipeline.size)
