"""Convert MADLAD-400 and Narrativa checkpoints to CTranslate2 folders that also hold their tokenizer.

The fixes live in `_FixedConfigConverter.load_model`, the converter's own hook for loading the
model: the converter reads the config with `AutoConfig`, we patch that config object before the
weights are loaded, and nothing is written to (or copied from) the source checkpoint.

- Narrativa (mBART-50): transformers 5 dropped `normalize_before` from MBartConfig, which the
  CTranslate2 loader reads to choose pre-norm; mBART is pre-norm, so it is set to True. Without
  `tokenizer_class="MBart50Tokenizer"` the loader treats the model as mBART-25 and drops the
  `</s>` decoder start token that mBART-50 (and `generate`) begin with. A tokenizer without a
  bos token gets mBART's `<s>` (CTranslate2 cannot load a null bos).
- MADLAD (T5): transformers 5 forces `T5Config.tie_word_embeddings=True` and moves the "scale the
  decoder output by d_model**-0.5" switch to `scale_decoder_outputs` (False for T5 v1.1 / MADLAD,
  whose lm_head is untied). CTranslate2's T5 loader still reads `tie_word_embeddings` to decide the
  scaling, so it is set back from `scale_decoder_outputs` once the weights are loaded (the untied
  lm_head is already in place by then). T5 activations overflow in float16, so float16 is refused.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from ptvl_io import atomic_dir
from translation.errors import ConfigurationError

ModelKind = Literal["madlad", "narrativa", "llm"]
KINDS: tuple[str, ...] = ("madlad", "narrativa", "llm")

# Every quantization CTranslate2's converter accepts (None keeps the checkpoint's dtype).
QUANTIZATIONS = (
    "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32",
)
# T5 overflows in float16 (activations exceed 65504): MADLAD outputs become garbage or empty.
FLOAT16_UNSAFE: dict[str, set[str]] = {"madlad": {"float16", "int8_float16"}, "narrativa": set(), "llm": set()}
MANIFEST = "ptvl_conversion.json"


class ConversionError(ConfigurationError, ValueError):
    """A conversion request that cannot produce a working model (bad kind, quantization or folder)."""


def check_precision(kind: str, precision: str | None, what: str = "quantization") -> None:
    """Reject precisions a model kind cannot run in, with the reason and the alternatives."""
    if kind not in FLOAT16_UNSAFE:
        raise ConversionError(f"unknown model kind {kind!r}; expected one of {sorted(FLOAT16_UNSAFE)}")
    if precision in FLOAT16_UNSAFE[kind]:
        raise ConversionError(
            f"{what} {precision!r} is not allowed for {kind}: T5 models such as MADLAD-400 overflow in "
            "float16 and produce garbage; use bfloat16, int8_bfloat16 or int8 (float32 also works)"
        )


def _fix_loaded_model(kind: ModelKind, model) -> None:
    scale = getattr(model.config, "scale_decoder_outputs", None)
    if kind == "madlad" and scale is not None:
        model.config.tie_word_embeddings = bool(scale)


def _fix_config(kind: ModelKind, config) -> None:
    if kind == "narrativa":
        if config.model_type != "mbart":
            raise ConversionError(f"narrativa expects an mBART checkpoint, got model_type={config.model_type!r}")
        config.normalize_before = True
        config.tokenizer_class = "MBart50Tokenizer"
    elif kind == "madlad" and config.model_type != "t5":
        raise ConversionError(f"madlad expects a T5 checkpoint, got model_type={config.model_type!r}")
    elif kind == "llm" and getattr(config, "is_encoder_decoder", False):
        raise ConversionError(f"llm expects a causal (decoder-only) LM, got the encoder-decoder "
                              f"model_type={config.model_type!r}")


def _converter_class():
    from ctranslate2.converters import TransformersConverter  # deferred: pulls in torch and transformers

    class _FixedConfigConverter(TransformersConverter):
        """TransformersConverter that patches the loaded config and keeps the tokenizer it loads."""

        def __init__(self, kind: ModelKind, source: str) -> None:
            super().__init__(source)
            self.kind = kind
            self.tokenizer = None

        def load_model(self, model_class, model_name_or_path, **kwargs):
            _fix_config(self.kind, kwargs["config"])
            model = super().load_model(model_class, model_name_or_path, **kwargs)
            _fix_loaded_model(self.kind, model)
            return model

        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            self.tokenizer = super().load_tokenizer(tokenizer_class, model_name_or_path, **kwargs)
            if self.kind == "narrativa" and self.tokenizer.bos_token is None:
                # transformers 5 builds MBart50Tokenizer without a bos_token unless the checkpoint's
                # tokenizer files name one; CTranslate2 refuses a null bos in its config.json.
                self.tokenizer.bos_token = "<s>"
            return self.tokenizer

    return _FixedConfigConverter


def _save_generation_config(source: str, dest: Path) -> None:
    """The checkpoint's generation_config.json (its end tokens), when it has one."""
    from transformers import GenerationConfig  # deferred: see convert_model

    try:
        GenerationConfig.from_pretrained(source).save_pretrained(dest)
    except OSError:  # no generation_config.json: the tokenizer's eos is the end token
        pass


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """blake2b-128 of a file's bytes, streamed (model.bin is several GB for MADLAD-3B)."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def convert_model(
    kind: ModelKind, source: str, dest: Path, quantization: str | None = None, force: bool = False,
) -> Path:
    """Convert a Hugging Face checkpoint (hub id or local folder) into a CTranslate2 folder at `dest`.

    `dest` receives model.bin, the CTranslate2 config and vocabulary, the tokenizer (saved with
    `save_pretrained`, so the engines load model and tokenizer from one folder) and `ptvl_conversion.json`
    (kind, source, quantization, versions, model digest). The folder appears atomically: a failed
    conversion leaves no half-written `dest`. Returns `dest`.
    """
    import ctranslate2  # deferred: heavy optional dependencies, only when converting
    import transformers

    dest = Path(dest)
    check_precision(kind, quantization)
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ConversionError(f"unknown quantization {quantization!r}; expected one of {', '.join(QUANTIZATIONS)}")
    if dest.exists() and not force:
        raise ConversionError(f"{dest} already exists; pass force=True (--force) to replace it")

    # force: the old folder goes only once the new one is complete
    with atomic_dir(dest, replace=force) as staging:
        converter = _converter_class()(kind, source)
        # force=True: atomic_dir has made the (empty) staging folder, which the converter would refuse
        try:
            converter.convert(str(staging), quantization=quantization, force=True)
        except ValueError as err:
            if "No conversion is registered" not in str(err):
                raise
            raise ConversionError(f"CTranslate2 cannot convert {source}: {err.args[0].splitlines()[0]} "
                                  "(run it with backend = \"hf\" instead)") from None
        converter.tokenizer.save_pretrained(staging)
        if kind == "llm":
            _save_generation_config(source, staging)
        manifest = {
            "kind": kind,
            "source": source,
            "quantization": quantization,
            "model_bin_blake2b": file_digest(staging / "model.bin"),
            "ctranslate2": ctranslate2.__version__,
            "transformers": transformers.__version__,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return dest
