"""Reading a published COMET checkpoint without pytorch-lightning or unbabel-comet.

The layout (Unbabel/wmt22-comet-da, Unbabel/wmt22-cometkiwi-da, and what `comet-train` writes):

    <model>/hparams.yaml             the model class (`class_identifier`) and its hyper-parameters
    <model>/checkpoints/model.ckpt   a PyTorch Lightning checkpoint: {"state_dict": ..., "hyper_parameters": ...}

The reference implementation (`comet.load_from_checkpoint`) takes the class from hparams.yaml and the
hyper-parameters from the checkpoint when it carries them; so does `read_checkpoint`.  The encoder's
config and tokenizer come from `pretrained_model` (a Hugging Face id such as xlm-roberta-large, or a folder
relative to the model folder, as the test fixture has); its weights are in the checkpoint.
"""
from __future__ import annotations

import hashlib
import pickle
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from translation.errors import ConfigurationError

CKPT = Path("checkpoints") / "model.ckpt"
HPARAMS = "hparams.yaml"
# The model classes this port implements (comet.models.str2model keys).
REGRESSION = "regression_metric"
UNIFIED = "unified_metric"
SUPPORTED = (REGRESSION, UNIFIED)


@dataclass(frozen=True)
class CometCheckpoint:
    """A checkpoint read into memory: where it is, what it is, its weights."""

    folder: Path
    model_id: str  # stable identity for caches: '<name>@<digest>' or '<hub id>@<commit>'
    kind: str  # REGRESSION | UNIFIED
    hparams: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    encoder_source: str  # a folder or a Hugging Face id holding config.json and the tokenizer


def resolve_model_folder(model: str) -> tuple[Path, str]:
    """(folder, identity) of `model`: a local folder, or a Hugging Face id fetched into (or found in) the
    hub cache.  A folder's identity is its name and a digest of its hparams.yaml and checkpoint bytes, so a
    different checkpoint never reuses another's cached scores."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / CKPT).is_file() or not (path / HPARAMS).is_file():
            raise ConfigurationError(f"{path} is not a COMET model folder: it needs {HPARAMS} and {CKPT}")
        return path.resolve(), f"{path.resolve().name}@{_digest(path, [HPARAMS, str(CKPT)])}"
    if path.suffix or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ConfigurationError(f"COMET model {model!r}: no such folder, and not a Hugging Face id (owner/name)")
    from huggingface_hub import snapshot_download  # deferred: the hub client loads only for a hub id

    try:
        folder = Path(snapshot_download(model, allow_patterns=[HPARAMS, str(CKPT), "*.md", "LICENSE*"]))
    except Exception as e:  # no network, gated model without a token, unknown id: one line that says which
        raise ConfigurationError(f"COMET model {model!r}: cannot fetch it from the Hugging Face hub "
                                f"({type(e).__name__}); download it and set the folder instead") from None
    return folder, f"{model}@{folder.name[:12]}"


def _digest(folder: Path, names: list[str]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in names:
        digest.update(name.encode() + b"\0")
        with (folder / name).open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()[:12]


# Lightning before 2.x pickled `hyper_parameters` as its AttributeDict (a dict subclass), which torch's
# weights-only unpickler refuses.  Such a file is read again by an unpickler that allows exactly what the
# weights-only one allows (tensors, storages, containers, numbers), plus AttributeDict read as a dict:
# no pytorch-lightning needed, and still no arbitrary code from the pickle.
_ATTRIBUTE_DICT_MODULES = frozenset({"pytorch_lightning.utilities.parsing", "lightning.fabric.utilities.data",
                                     "lightning_fabric.utilities.data", "lightning.pytorch.utilities.parsing"})


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name == "AttributeDict" and module in _ATTRIBUTE_DICT_MODULES:
            return dict
        from torch._weights_only_unpickler import _get_allowed_globals  # deferred: only old checkpoints

        found = _get_allowed_globals().get(f"{module}.{name}")
        if found is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint")
        return found


_RESTRICTED_PICKLE = types.SimpleNamespace(Unpickler=_RestrictedUnpickler, load=pickle.load,
                                           __name__="restricted_pickle")


def load_lightning_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint's dict, read with torch's weights-only unpickler (tensors, containers and
    numbers only), or, for Lightning's AttributeDict, with the same allowlist and that class as a dict."""
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "AttributeDict" not in str(e):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RESTRICTED_PICKLE)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigurationError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ConfigurationError(f"{path}: a COMET checkpoint is a dict with a 'state_dict'")
    return ckpt


def read_checkpoint(model: str) -> CometCheckpoint:
    """Read `model` (a folder or a Hugging Face id): hparams, weights and where its encoder comes from.
    Raises ConfigurationError with one line on a missing file, an unsupported class or a bad checkpoint."""
    folder, model_id = resolve_model_folder(model)
    with (folder / HPARAMS).open(encoding="utf-8") as f:
        hparams = yaml.safe_load(f) or {}
    kind = hparams.get("class_identifier")
    if kind not in SUPPORTED:
        raise ConfigurationError(f"{folder / HPARAMS}: class_identifier {kind!r} is not supported "
                                f"(this port runs {', '.join(SUPPORTED)}: COMET-22 and CometKiwi)")
    ckpt = load_lightning_checkpoint(folder / CKPT)
    # As comet.load_from_checkpoint: the checkpoint's own hyper-parameters win over the YAML's.
    hparams = {**hparams, **dict(ckpt.get("hyper_parameters") or {})}
    if hparams.get("encoder_model", "XLM-RoBERTa") != "XLM-RoBERTa":
        raise ConfigurationError(f"{folder}: encoder {hparams['encoder_model']!r} is not supported (XLM-RoBERTa "
                                "only: COMET-22 uses XLM-R large, CometKiwi InfoXLM large)")
    pretrained = str(hparams.get("pretrained_model") or "")
    local = (folder / pretrained) if pretrained else None
    encoder_source = str(local.resolve()) if local is not None and local.is_dir() else pretrained
    if not encoder_source:
        raise ConfigurationError(f"{folder / HPARAMS}: no pretrained_model, so the encoder's config is unknown")
    return CometCheckpoint(folder, model_id, kind, hparams, ckpt["state_dict"], encoder_source)

