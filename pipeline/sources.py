"""Where each dataset's source files live under the run root, and which reader reads them.

The sample writer and the real fetch (data_manifests/) lay files out under the same names, so the
rest of the pipeline does not care which one produced them.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.readers.cc3m import read_cc3m_tsv
from pipeline.readers.coco import coco_urls_by_id, read_karpathy
from pipeline.readers.common import ReadResult
from pipeline.readers.visdial import read_visdial
from pipeline.readers.vqa import read_vqav2
from pipeline.settings import Settings

CC3M_FILES = {"train": "Train_GCC-training.tsv", "validation": "Validation_GCC-1.1.0-Validation.tsv"}


def _expand(template: str, sources: Path) -> str:
    """Fill the {sources} placeholder (the run's sources folder) and leave {image_id} for the reader."""
    return template.replace("{sources}", str(sources))


def read_split(settings: Settings, dataset: str, split: str) -> ReadResult:
    """Run the right reader for one split of `dataset`."""
    sources = settings.root / "sources"
    ds = settings.datasets
    if dataset == "cc3m":

        return read_cc3m_tsv(sources / "cc3m" / CC3M_FILES[split], split, max_chars=ds.max_text_chars,
                             allow_local_files=settings.local_files_allowed)
    if dataset == "coco":

        return read_karpathy(
            sources / "coco" / "dataset_coco.json",
            splits=(split,),
            url_base=_expand(ds.coco.url_base, sources),
            fold_restval=ds.coco.fold_restval,
            max_chars=ds.max_text_chars,
        )
    if dataset == "visdial":

        dense = sources / "visdial" / f"visdial_1.0_{split}_dense_annotations.json"
        template = settings.datasets.visdial.image_url_template[split]
        if template == "coco_url":

            annotations = [sources / "coco" / "annotations" / f"captions_{s}2014.json" for s in ("train", "val")]
            url_of = coco_urls_by_id(annotations, allow_local_files=settings.local_files_allowed).__getitem__
        else:
            url_of = _expand(template, sources)
        return read_visdial(
            sources / "visdial" / f"visdial_1.0_{split}.json",
            split,
            dense_path=dense if dense.exists() else None,
            image_url_template=url_of,
            max_chars=ds.max_text_chars,
        )
    if dataset == "vqav2":

        return read_vqav2(
            sources / "vqav2" / f"v2_OpenEnded_mscoco_{split}2014_questions.json",
            sources / "vqav2" / f"v2_mscoco_{split}2014_annotations.json",
            split,
            image_url_template=_expand(ds.vqav2.image_url_template, sources),
            max_chars=ds.max_text_chars,
        )
    raise ValueError(f"unknown dataset {dataset!r}: expected cc3m, coco, visdial or vqav2")
