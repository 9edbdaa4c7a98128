"""The shipped data_manifests/ load and hold the official facts; bad manifests fail with clear errors."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline.manifests import MANIFEST_DIR, ManifestError, load_all, load_manifest, load_source

GOOD = textwrap.dedent(
    """
    name = "toy"
    description = "a toy source"
    licence = "CC0"
    citation = "@misc{toy}"
    homepage = "http://127.0.0.1/"

    [[files]]
    name = "a.tsv"
    url = "http://127.0.0.1/a.tsv"
    kind = "tsv"
    size = 10
    sha256_pending = true
    rows = 2
    """
)


def write(tmp_path: Path, text: str, name: str = "toy.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_shipped_manifest_loads() -> None:
    manifests = load_all()
    assert set(manifests) == {"cc3m", "coco", "visdial", "vqav2"}
    assert MANIFEST_DIR.name == "data_manifests"
    for name, m in manifests.items():
        assert m.name == name
        assert "@" in m.citation and m.licence and m.homepage.startswith("http")
        for f in m.files:
            assert f.url.startswith(("http://", "https://"))
            assert (f.sha256 is not None) != f.sha256_pending


def test_shipped_manifests_hold_the_official_counts() -> None:
    m = load_all()
    cc3m = m["cc3m"]
    assert cc3m.file("Train_GCC-training.tsv").rows == 3_318_333
    assert cc3m.file("Validation_GCC-1.1.0-Validation.tsv").rows == 15_840
    coco_ann = {x.path: x for x in m["coco"].file("annotations_trainval2014.zip").members}
    assert coco_ann["annotations/captions_train2014.json"].records == 82_783
    assert coco_ann["annotations/captions_val2014.json"].records == 40_504
    karpathy = m["coco"].file("caption_datasets.zip").members[0]
    assert (karpathy.path, karpathy.count_path, karpathy.records) == ("dataset_coco.json", "images", 123_287)
    visdial = m["visdial"]
    assert visdial.file("visdial_1.0_train.zip").members[0].count_path == "data.dialogs"
    assert visdial.file("visdial_1.0_train.zip").members[0].records == 123_287
    assert visdial.file("visdial_1.0_val.zip").members[0].records == 2_064
    assert visdial.file("VisualDialog_val2018.zip").members[0].files == 2_064
    assert visdial.file("visdial_1.0_val_dense_annotations.json").sha256_pending
    vqa = {f.name: f for f in m["vqav2"].files}
    assert set(vqa) == {"v2_Questions_Val_mscoco.zip", "v2_Annotations_Val_mscoco.zip"}
    assert all(f.members[0].records == 214_354 for f in vqa.values())


def test_manifest_dir_override(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    assert load_source("toy", tmp_path).file("a.tsv").rows == 2
    assert set(load_all(tmp_path)) == {"toy"}


def test_unknown_key_is_a_clear_error(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace('rows = 2', 'rows = 2\nsha265 = "typo"'))
    with pytest.raises(ManifestError) as e:
        load_manifest(p)
    msg = str(e.value)
    assert str(p) in msg and "files[0].sha265" in msg and "Extra inputs are not permitted" in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    p = write(tmp_path, "licnce = 'x'\n" + GOOD)
    with pytest.raises(ManifestError, match=r"toy\.toml.*\n.*licnce"):
        load_manifest(p)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("sha256_pending = true", "", "give sha256, or set sha256_pending"),
        ("sha256_pending = true", 'sha256 = "abc"', "64 lowercase hex"),
        ("rows = 2", "records = 2\ncount_path = 'x'", "records is only valid for kind = 'json'"),
        ('url = "http://127.0.0.1/a.tsv"', 'url = "ftp://x/a.tsv"', "url must start with"),
        ('name = "a.tsv"', 'name = "../a.tsv"', "plain file name"),
        ("size = 10", "size = -1", "greater than 0"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    p = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ManifestError, match=message) as e:
        load_manifest(p)
    assert str(p) in str(e.value) and "files[0]" in str(e.value)


def test_zip_member_paths_cannot_escape(tmp_path: Path) -> None:
    text = GOOD.replace('kind = "tsv"', 'kind = "zip"').replace("rows = 2", "") + textwrap.dedent(
        """
        [[files.members]]
        path = "../../etc/passwd"
        kind = "tsv"
        """
    )
    with pytest.raises(ManifestError, match=r"files\[0\]\.members\[0\]\.path.*relative path"):
        load_manifest(write(tmp_path, text))


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="invalid TOML"):
        load_manifest(write(tmp_path, GOOD + "\n[[files]\n"))
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "nope.toml")


def test_name_must_match_file(tmp_path: Path) -> None:
    write(tmp_path, GOOD, name="other.toml")
    with pytest.raises(ManifestError, match="name = 'toy' but the file is other.toml"):
        load_source("other", tmp_path)
