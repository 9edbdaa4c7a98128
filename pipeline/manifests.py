"""Source manifests: one TOML per dataset in data_manifests/, validated into pydantic models.

A manifest lists the official files of a source (URL, size, sha256, row or record counts, archive
members to extract) plus its licence and citation. `pipeline.fetch` downloads and verifies them.

Example (data_manifests/coco.toml)::

    name = "coco"
    description = "..."
    licence = "..."
    citation = '''@inproceedings{...}'''
    homepage = "https://cocodataset.org"

    [[files]]
    name = "caption_datasets.zip"
    url = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
    kind = "zip"
    size = 36745453
    sha256 = "4cfd..."

    [[files.members]]
    path = "dataset_coco.json"
    kind = "json"
    count_path = "images"
    records = 123287
"""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The repository's data_manifests/ folder, next to the `pipeline` package (editable installs and
# checkouts). PTVL_MANIFEST_DIR overrides it, e.g. for a wheel install or a private mirror.
_DEFAULT_MANIFEST_DIR = Path(__file__).resolve().parent.parent / "data_manifests"
MANIFEST_DIR: Path = Path(os.environ.get("PTVL_MANIFEST_DIR", _DEFAULT_MANIFEST_DIR))

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URL_SCHEMES = ("http://", "https://", "file://")


class ManifestError(ValueError):
    """A manifest file is missing, is not valid TOML, or does not match the schema."""


def _check_relative_path(value: str, what: str) -> str:
    # Paths from a manifest become paths on disk: refuse anything that could escape dest_dir.
    p = PurePosixPath(value)
    if not value or p.is_absolute() or ".." in p.parts or "\\" in value:
        raise ValueError(f"{what} must be a relative path without '..' (got {value!r})")
    return value


class ZipMember(BaseModel):
    """One member of a zip archive to extract and verify.

    kind "json": `path` is the member's path; `records` entries are expected at `count_path`.
    kind "tsv": `path` is the member's path; `rows` lines are expected.
    kind "files": `path` is a glob (fnmatch) over member names, e.g. "VisualDialog_val2018/*.jpg";
    every match is extracted and `files` is the expected number of matches.
    """

    model_config = ConfigDict(extra="forbid")

    path: str
    kind: Literal["json", "tsv", "files"]
    rows: int | None = Field(default=None, ge=0, description="expected lines (kind tsv)")
    records: int | None = Field(default=None, ge=0, description="expected entries at count_path (kind json)")
    count_path: str | None = Field(
        default=None, description='dotted JSON path counted, e.g. "images" or "data.dialogs"; "" = top level'
    )
    files: int | None = Field(default=None, ge=0, description="expected number of matches (kind files)")

    @field_validator("path")
    @classmethod
    def _safe_path(cls, v: str) -> str:
        return _check_relative_path(v, "member path")

    @model_validator(mode="after")
    def _fields_match_kind(self) -> ZipMember:
        _only_for(self, "rows", "tsv")
        _only_for(self, "records", "json")
        _only_for(self, "count_path", "json")
        _only_for(self, "files", "files")
        if self.records is not None and self.count_path is None:
            raise ValueError("records needs count_path (use \"\" to count the top-level value)")
        return self


class FileEntry(BaseModel):
    """One downloadable file of a source."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="file name under the source's folder (sources/<dataset>/<name>)")
    url: str
    kind: Literal["tsv", "json", "zip"]
    description: str = ""
    size: int | None = Field(default=None, gt=0, description="bytes; unset when not known with confidence")
    sha256: str | None = Field(default=None, description="lowercase hex digest")
    sha256_pending: bool = Field(
        default=False, description="true while the checksum is still to be recorded (fetch logs the digest)"
    )
    rows: int | None = Field(default=None, ge=0, description="expected lines (kind tsv)")
    records: int | None = Field(default=None, ge=0, description="expected entries at count_path (kind json)")
    count_path: str | None = Field(default=None, description="dotted JSON path counted (kind json)")
    members: list[ZipMember] = Field(default_factory=list, description="members to extract (kind zip)")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or "/" in v or "\\" in v or v in (".", "..") or v.startswith("_"):
            raise ValueError(f"name must be a plain file name not starting with '_' (got {v!r})")
        return v

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not v.startswith(_URL_SCHEMES):
            raise ValueError(f"url must start with one of {', '.join(_URL_SCHEMES)} (got {v!r})")
        return v

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256.match(v):
            raise ValueError("sha256 must be 64 lowercase hex characters")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> FileEntry:
        # Exactly one of: a recorded checksum, or an explicit promise to record it.
        if self.sha256 is None and not self.sha256_pending:
            raise ValueError("give sha256, or set sha256_pending = true while it is still to be recorded")
        if self.sha256 is not None and self.sha256_pending:
            raise ValueError("sha256 is set, so sha256_pending must be false")
        _only_for(self, "rows", "tsv")
        _only_for(self, "records", "json")
        _only_for(self, "count_path", "json")
        if self.members and self.kind != "zip":
            raise ValueError("members is only valid for kind = \"zip\"")
        if self.records is not None and self.count_path is None:
            raise ValueError("records needs count_path (use \"\" to count the top-level value)")
        return self


class Manifest(BaseModel):
    """All files of one source dataset, with its licence and citation."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str
    licence: str
    citation: str = Field(description="BibTeX")
    homepage: str
    files: list[FileEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Manifest:
        seen: set[str] = set()
        for f in self.files:
            if f.name in seen:
                raise ValueError(f"duplicate file name {f.name!r}")
            seen.add(f.name)
        return self

    def file(self, name: str) -> FileEntry:
        """The entry called `name` (KeyError listing the known names otherwise)."""
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(f"manifest {self.name!r} has no file {name!r}; it has {[f.name for f in self.files]}")


def _only_for(model: BaseModel, field: str, kind: str) -> None:
    if getattr(model, field) is not None and model.kind != kind:  # type: ignore[attr-defined]
        raise ValueError(f"{field} is only valid for kind = {kind!r} (this entry is {model.kind!r})")  # type: ignore[attr-defined]


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate one manifest; ManifestError names the file and every bad key."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"{path}: invalid TOML: {e}") from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        lines = [f"  {_format_loc(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ManifestError(f"{path}: invalid manifest ({e.error_count()} error(s)):\n" + "\n".join(lines)) from None


def manifest_path(name: str, manifest_dir: str | Path | None = None) -> Path:
    """Path of the manifest for source `name` (e.g. "coco") in `manifest_dir` or MANIFEST_DIR."""
    return Path(manifest_dir or MANIFEST_DIR) / f"{name}.toml"


def load_source(name: str, manifest_dir: str | Path | None = None) -> Manifest:
    """Load the manifest of source `name`, checking that its `name` key matches the file name."""
    m = load_manifest(manifest_path(name, manifest_dir))
    if m.name != name:
        raise ManifestError(f"{manifest_path(name, manifest_dir)}: name = {m.name!r} but the file is {name}.toml")
    return m


def load_all(manifest_dir: str | Path | None = None) -> dict[str, Manifest]:
    """Every manifest in the folder, by source name."""
    folder = Path(manifest_dir or MANIFEST_DIR)
    if not folder.is_dir():
        raise ManifestError(f"{folder}: manifest folder not found (set PTVL_MANIFEST_DIR)")
    return {p.stem: load_source(p.stem, folder) for p in sorted(folder.glob("*.toml"))}
