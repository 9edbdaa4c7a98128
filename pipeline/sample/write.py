"""Write the bilingual synthetic sample in the real source formats, deterministically from a seed.

Layout under `out_dir` (the run's sources/ folder), named as the official downloads are:

    cc3m/Train_GCC-training.tsv, cc3m/Validation_GCC-1.1.0-Validation.tsv   caption<TAB>file:// URL
    images/cc3m/<split>/<n>.jpg                                              the CC3M images
    coco/dataset_coco.json, coco/val2014/COCO_val2014_<cocoid>.jpg           Karpathy split, 5 captions
    visdial/visdial_1.0_val.json, visdial/visdial_1.0_val_dense_annotations.json
    visdial/VisualDialog_val2018/VisualDialog_val2018_<image_id>.jpg
    vqav2/v2_OpenEnded_mscoco_val2014_questions.json, vqav2/v2_mscoco_val2014_annotations.json
    vqav2/val2014/COCO_val2014_<image_id>.jpg                                3 questions x 10 answers each
    reference_memory.parquet        every English string with its PT-PT text (the `reference` engine)
    sample_truth.json               which CC3M rows are broken on purpose, and how

About `broken_fraction` of the CC3M rows point at a dead path, a truncated JPEG, HTML bytes named
.jpg or a tiny image, and the train TSV has a few malformed lines, so the download's failure
reasons and the reader's quarantine both run on the default profile.
"""
from __future__ import annotations

import io
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.io import atomic_write, write_bytes_atomic, write_json_atomic, write_parquet_atomic
from pipeline.sample.dialogs import Pair, answer_universe, relevance, sample_dialog
from pipeline.sample.scenes import Scene, captions, render, sample_scene
from pipeline.sample.vqa import sample_answers, sample_questions
from translation.textkey import text_hash

CC3M_FILES = {"train": "Train_GCC-training.tsv", "validation": "Validation_GCC-1.1.0-Validation.tsv"}
REFERENCE_MEMORY = pa.schema([("text_hash", pa.string()), ("text_en", pa.string()), ("text_pt", pa.string())])
FAULT_KINDS = ("dead", "truncated", "not_image", "too_small")
TOO_SMALL_PX = 8  # below any sensible img2dataset min_image_size
JPEG_QUALITY = 90
NOT_AN_IMAGE = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n<body>gone</body></html>\n"


@dataclass(frozen=True)
class SampleLayout:
    """Paths (and URL bases) of everything write_sample wrote."""

    root: Path
    cc3m_train_tsv: Path
    cc3m_validation_tsv: Path
    coco_karpathy_json: Path
    coco_url_base: str  # read_karpathy(url_base=...)
    visdial_val_json: Path
    visdial_val_dense_json: Path
    visdial_image_url_template: str  # read_visdial(image_url_template=...)
    reference_memory: Path
    truth: Path
    # VQAv2-style pair: read_vqav2(questions, annotations, "val", image_url_template=...).
    vqav2_questions_json: Path | None = None
    vqav2_annotations_json: Path | None = None
    vqav2_image_url_template: str | None = None


class _Memory:
    """EN -> PT pairs of the sample; a second, different PT for an English string is a template bug."""

    def __init__(self) -> None:
        self.pt: dict[str, str] = {}

    def add(self, pair: Pair) -> str:
        en, pt = pair
        seen = self.pt.setdefault(en, pt)
        if seen != pt:
            raise ValueError(f"sample templates map {en!r} to both {seen!r} and {pt!r}")
        return en

    def table(self) -> pa.Table:
        rows = sorted((text_hash(en), en, pt) for en, pt in self.pt.items())
        return pa.Table.from_arrays([pa.array(c, pa.string()) for c in zip(*rows, strict=True)], schema=REFERENCE_MEMORY)


def _rng(seed: int, *stream: str) -> random.Random:
    """An independent, reproducible stream per purpose (str seeds hash with SHA-512, not hash())."""
    return random.Random("/".join(["ptvl-sample", str(seed), *stream]))


def _jpeg(scene: Scene, size: int) -> bytes:
    buf = io.BytesIO()
    render(scene, size).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _truncated(jpeg: bytes) -> bytes:
    """Cut inside the header, before the scan starts: no decoder can return pixels from it (a cut
    inside the scan still decodes, grey-filled, in OpenCV and PIL)."""
    sos = jpeg.find(b"\xff\xda")
    return jpeg[: max(sos // 2, 4)]


def _write_image(path: Path, data: bytes) -> None:
    """Temp file + rename, without fsync: images are cheap to rewrite and the run's marker file is
    written only after write_sample returns."""
    with atomic_write(path, "wb", fsync=False) as f:
        f.write(data)


def _cc3m_split(
    root: Path, split: str, n: int, seed: int, image_size: int, broken_fraction: float, malformed: bool,
    memory: _Memory,
) -> dict[str, dict[int, str]]:
    """Write one CC3M TSV and its images; return the 0-based line index of each broken / malformed row."""
    rng, faults_rng = _rng(seed, "cc3m", split, "scenes"), _rng(seed, "cc3m", split, "faults")
    scenes = [sample_scene(rng) for _ in range(n)]
    chosen = [rng.randrange(5) for _ in range(n)]
    broken_rows = sorted(faults_rng.sample(range(n), round(n * broken_fraction)))
    kinds = [FAULT_KINDS[i % len(FAULT_KINDS)] for i in range(len(broken_rows))]
    faults_rng.shuffle(kinds)
    fault = dict(zip(broken_rows, kinds, strict=True))
    img_dir = root / "images" / "cc3m" / split
    lines: list[bytes] = []
    for i, (scene, c) in enumerate(zip(scenes, chosen, strict=True)):
        for pair in captions(scene):
            memory.add(pair)
        path = img_dir / f"{i:06d}.jpg"
        kind = fault.get(i)
        if kind == "dead":
            path.unlink(missing_ok=True)  # a previous run with other settings may have left one
        elif kind == "truncated":
            _write_image(path, _truncated(_jpeg(scene, image_size)))
        elif kind == "not_image":
            _write_image(path, NOT_AN_IMAGE)
        elif kind == "too_small":
            _write_image(path, _jpeg(scene, TOO_SMALL_PX))
        else:
            _write_image(path, _jpeg(scene, image_size))
        lines.append(f"{captions(scene)[c][0]}\t{path.as_uri()}\n".encode())

    # Row index -> fault is stated in line indices of the final file, after malformed lines go in.
    inserted: dict[int, tuple[bytes, str]] = {}
    if malformed:
        extra = sample_scene(faults_rng)
        cap = captions(extra)[0][0]
        good_url = (img_dir / f"{next(i for i in range(n) if i not in fault):06d}.jpg").as_uri()
        bad = [
            (b"\n", "blank"),
            (f"{cap}\n".encode(), "missing_field"),
            (f"   \t{good_url}\n".encode(), "empty_caption"),
            (cap.encode()[:5] + b"\xff" + cap.encode()[5:] + f"\t{good_url}\n".encode(), "bad_utf8"),
            (f"{cap}\t{good_url}\textra\n".encode(), "too_many_fields"),
            (f"{cap}\tftp://example.invalid/{split}.jpg\n".encode(), "bad_url"),
        ]
        at = sorted(faults_rng.sample(range(n + len(bad)), len(bad)))
        inserted = dict(zip(at, bad, strict=True))
    out: list[bytes] = []
    truth: dict[str, dict[int, str]] = {"broken": {}, "malformed": {}}
    rows = iter(enumerate(lines))
    for line_index in range(n + len(inserted)):
        if line_index in inserted:
            data, reason = inserted[line_index]
            out.append(data)
            truth["malformed"][line_index] = reason
            continue
        row, data = next(rows)
        out.append(data)
        if row in fault:
            truth["broken"][line_index] = fault[row]
    write_bytes_atomic(root / "cc3m" / CC3M_FILES[split], b"".join(out))
    return truth


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _coco(root: Path, n: int, seed: int, image_size: int, memory: _Memory) -> Path:
    """Karpathy-style dataset_coco.json: first half val, second half test, 5 captions each."""
    rng = _rng(seed, "coco")
    cocoids = rng.sample(range(1, 581_930), n)
    images, sentid = [], 0
    for imgid, cocoid in enumerate(cocoids):
        scene = sample_scene(rng)
        pairs = captions(scene)
        rng.shuffle(pairs)
        filename = f"COCO_val2014_{cocoid:012d}.jpg"
        _write_image(root / "coco" / "val2014" / filename, _jpeg(scene, image_size))
        sentences = []
        for pair in pairs:
            raw = memory.add(pair)
            sentences.append({"tokens": _tokens(raw), "raw": raw, "imgid": imgid, "sentid": sentid})
            sentid += 1
        images.append(
            {
                "filepath": "val2014",
                "sentids": [s["sentid"] for s in sentences],
                "filename": filename,
                "imgid": imgid,
                "split": "val" if imgid < n // 2 else "test",
                "sentences": sentences,
                "cocoid": cocoid,
            }
        )
    path = root / "coco" / "dataset_coco.json"
    write_bytes_atomic(path, json.dumps({"images": images, "dataset": "coco"}).encode())
    return path


def _visdial(root: Path, n: int, seed: int, image_size: int, memory: _Memory) -> tuple[Path, Path]:
    """VisDial v1.0 val-style JSON (10 rounds, 100 options) and its dense annotations."""
    rng = _rng(seed, "visdial")
    universe = answer_universe()
    answer_index = {a: i for i, a in enumerate(universe)}
    for a in universe:
        memory.add(a)
    questions: list[str] = []
    question_index: dict[str, int] = {}
    dialogs, dense = [], []
    for image_id in rng.sample(range(1, 1_000_000), n):
        scene = sample_scene(rng)
        caption = memory.add(rng.choice(captions(scene)))
        for pair in captions(scene):
            memory.add(pair)
        _write_image(
            root / "visdial" / "VisualDialog_val2018" / f"VisualDialog_val2018_{image_id:012d}.jpg",
            _jpeg(scene, image_size),
        )
        rounds, answers_right = [], []
        for qa in sample_dialog(scene, rng):
            q = memory.add(qa.question)
            if q not in question_index:
                question_index[q] = len(questions)
                questions.append(q)
            right = answer_index[qa.answer]
            # Answers that mean the same always take part, so every dense round has 0.5 scores too.
            same = [i for i, a in enumerate(universe) if relevance(qa.answer, a) == 0.5]
            rest = [i for i in range(len(universe)) if i != right and i not in same]
            options = [right, *same] + rng.sample(rest, 99 - len(same))
            rng.shuffle(options)
            rounds.append(
                {"answer": right, "gt_index": options.index(right), "question": question_index[q], "answer_options": options}
            )
            answers_right.append(qa.answer)
        round_id = rng.randint(1, len(rounds))
        r = rounds[round_id - 1]
        dense.append(
            {
                "image_id": image_id,
                "round_id": round_id,
                "gt_relevance": [relevance(answers_right[round_id - 1], universe[o]) for o in r["answer_options"]],
            }
        )
        dialogs.append({"image_id": image_id, "caption": caption, "dialog": rounds})
    doc = {
        "version": "1.0",
        "split": "val2018",
        "data": {"questions": questions, "answers": [a[0] for a in universe], "dialogs": dialogs},
    }
    path = root / "visdial" / "visdial_1.0_val.json"
    dense_path = root / "visdial" / "visdial_1.0_val_dense_annotations.json"
    write_bytes_atomic(path, json.dumps(doc).encode())
    write_bytes_atomic(dense_path, json.dumps(dense).encode())
    return path, dense_path


VQA_FILES = {"questions": "v2_OpenEnded_mscoco_val2014_questions.json", "annotations": "v2_mscoco_val2014_annotations.json"}
VQA_LICENSE = {"name": "Creative Commons Attribution 4.0 International License",
               "url": "http://creativecommons.org/licenses/by/4.0/"}


def _vqav2(root: Path, n: int, seed: int, image_size: int, memory: _Memory) -> tuple[Path, Path]:
    """VQAv2 val-style questions and annotations JSON: 3 questions per image (yes/no, number, other),
    10 answers each; question ids are image_id * 1000 + k as in the real files."""
    rng = _rng(seed, "vqav2")
    info = {"description": "ptvl synthetic sample in the VQA v2.0 layout", "version": "2.0", "year": 2017}
    questions, annotations = [], []
    for image_id in rng.sample(range(1, 581_930), n):
        scene = sample_scene(rng)
        _write_image(root / "vqav2" / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", _jpeg(scene, image_size))
        for k, vq in enumerate(sample_questions(scene, rng)):
            question_id = image_id * 1000 + k
            questions.append({"image_id": image_id, "question": memory.add(vq.question), "question_id": question_id})
            answers = sample_answers(vq, rng)
            annotations.append(
                {
                    "question_type": vq.question_type,
                    "multiple_choice_answer": memory.add(vq.answer),  # >= 8 of 10 annotators agree on it
                    "answers": [
                        {"answer": memory.add(pair), "answer_confidence": "yes" if right else "maybe", "answer_id": i + 1}
                        for i, (pair, right) in enumerate(answers)
                    ],
                    "image_id": image_id,
                    "answer_type": vq.answer_type,
                    "question_id": question_id,
                }
            )
    q_doc = {"info": info, "task_type": "Open-Ended", "data_type": "mscoco", "license": VQA_LICENSE,
             "data_subtype": "val2014", "questions": questions}
    a_doc = {"info": info, "license": VQA_LICENSE, "data_subtype": "val2014", "annotations": annotations,
             "data_type": "mscoco"}
    q_path, a_path = root / "vqav2" / VQA_FILES["questions"], root / "vqav2" / VQA_FILES["annotations"]
    write_bytes_atomic(q_path, json.dumps(q_doc).encode())
    write_bytes_atomic(a_path, json.dumps(a_doc).encode())
    return q_path, a_path


def write_sample(
    out_dir: Path,
    seed: int = 0,
    n_train: int = 600,
    n_val: int = 100,
    n_coco: int = 100,
    n_dialogs: int = 50,
    image_size: int = 64,
    broken_fraction: float = 0.1,
    n_vqa: int = 50,
) -> SampleLayout:
    """Write the sample under `out_dir`; the same arguments (and out_dir) give byte-identical files.

    Each source draws its scenes from its own random stream, so changing one size leaves the other
    sources' files unchanged.
    """
    if not 0 <= broken_fraction < 1:
        raise ValueError(f"broken_fraction must be in [0, 1), got {broken_fraction}")
    if min(n_train, n_val) < 1 or n_coco < 2 or n_dialogs < 1 or n_vqa < 1:
        raise ValueError("the sample needs n_train, n_val, n_dialogs, n_vqa >= 1 and n_coco >= 2 (val and test)")
    root = Path(out_dir).resolve()
    memory = _Memory()
    truth = {
        "seed": seed,
        "cc3m": {
            split: _cc3m_split(root, split, n, seed, image_size, broken_fraction, split == "train", memory)
            for split, n in (("train", n_train), ("validation", n_val))
        },
    }
    coco_json = _coco(root, n_coco, seed, image_size, memory)
    visdial_json, dense_json = _visdial(root, n_dialogs, seed, image_size, memory)
    vqa_questions, vqa_annotations = _vqav2(root, n_vqa, seed, image_size, memory)
    write_parquet_atomic(root / "reference_memory.parquet", memory.table(), REFERENCE_MEMORY)
    write_json_atomic(root / "sample_truth.json", truth)
    return SampleLayout(
        root=root,
        cc3m_train_tsv=root / "cc3m" / CC3M_FILES["train"],
        cc3m_validation_tsv=root / "cc3m" / CC3M_FILES["validation"],
        coco_karpathy_json=coco_json,
        coco_url_base=f"{(root / 'coco').as_uri()}",
        visdial_val_json=visdial_json,
        visdial_val_dense_json=dense_json,
        visdial_image_url_template=(root / "visdial" / "VisualDialog_val2018").as_uri()
        + "/VisualDialog_val2018_{image_id:012d}.jpg",
        reference_memory=root / "reference_memory.parquet",
        truth=root / "sample_truth.json",
        vqav2_questions_json=vqa_questions,
        vqav2_annotations_json=vqa_annotations,
        vqav2_image_url_template=(root / "vqav2" / "val2014").as_uri() + "/COCO_val2014_{image_id:012d}.jpg",
    )
