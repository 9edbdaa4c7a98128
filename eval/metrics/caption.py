"""Captioning metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) through pycocoevalcap's scorers, one by one.

`COCOEvalCap.evaluate()` is never called: it also runs SPICE, which downloads Stanford CoreNLP models at
run time and fails offline. We reproduce its other steps exactly: PTBTokenizer on references and
hypotheses, then Bleu(4), Meteor, Rouge and Cider on the tokenized text.

METEOR runs through our own `MeteorScorer`, which launches pycocoevalcap's bundled meteor-1.5.jar with the
flags of a labelled mode and speaks the same stdin protocol as pycocoevalcap's `Meteor`, but with a
deadline on every read and write: pycocoevalcap's wrapper blocks forever when the jar dies or hangs.
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import threading
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import pycocoevalcap.meteor.meteor as _coco_meteor
import pycocoevalcap.tokenizer.ptbtokenizer as _coco_ptb
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

log = logging.getLogger(__name__)


class _JavaStderrToLog(subprocess.Popen):
    """pycocoevalcap's PTBTokenizer starts its JVM with our stderr, so "PTBTokenizer tokenized N tokens"
    and "Untokenizable: ..." reach the console on every evaluation.  This Popen captures the JVM's stderr
    and relays it at DEBUG (`ptvl -v` shows it); the tokenizer's own code runs unchanged."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("stderr", subprocess.PIPE)
        super().__init__(*args, **kwargs)

    def communicate(self, *args, **kwargs):
        out, err = super().communicate(*args, **kwargs)
        for line in (err or b"").decode("utf-8", "replace").splitlines():
            log.debug("PTBTokenizer: %s", line)
        return out, err


# The tokenizer module looks `subprocess.Popen` up at call time: give it the capturing one.
_coco_ptb.subprocess = type("_Subprocess", (), {"Popen": _JavaStderrToLog, "PIPE": subprocess.PIPE})

MeteorMode = Literal["en", "pt"]
METEOR_JAR = Path(_coco_meteor.__file__).parent / "meteor-1.5.jar"  # the jar pycocoevalcap bundles

# Flags per labelled mode (after `-jar meteor-1.5.jar - - -stdio`).
# en: pycocoevalcap's hard-coded default, the only mode comparable with the thesis and with papers.
#     Modules exact, stem, synonym, paraphrase (English tables shipped with the jar); -norm tokenizes and
#     normalises punctuation.
# pt: Portuguese exact + Snowball-stem matching only (the jar ships no Portuguese paraphrase table and an
#     empty function-word list), language-independent parameters, lowercasing only: `-norm` has no
#     Portuguese normaliser and the jar exits with "No normalizer for language (portuguese)".
METEOR_FLAGS: dict[str, list[str]] = {"en": ["-l", "en", "-norm"], "pt": ["-l", "pt", "-lower"]}

TOKENIZATION_NOTE = (
    "Captions (references and hypotheses) are tokenized by pycocoevalcap's PTBTokenizer (Stanford CoreNLP "
    "3.4.1, `-preserveLines -lowerCase`) before every metric, as COCOEvalCap does. It lowercases everything, "
    "keeps accented letters (\"ação\", \"à\", \"maçã\" are unchanged) and keeps hyphenated words whole "
    "(\"cão-polícia\" stays one token). It splits off punctuation and then drops the tokens "
    "'' ' `` ` . ? ! , : ; - -- ... (so quotes, guillemets and dashes disappear), but NOT brackets: "
    "\"(\" and \")\" become the tokens \"-lrb-\" and \"-rrb-\" (pycocoevalcap's filter lists them in upper "
    "case, after lowercasing), and English clitics are split (\"joão's\" -> \"joão 's\"). Decimal numbers "
    "such as \"3.5\" stay one token. Line breaks and other Unicode line separators inside a caption are "
    "replaced by spaces first (the tokenizer is line-aligned)."
)


class CaptionInputError(ValueError):
    """References and hypotheses do not describe the same images, or a caption is not a string."""


class MeteorError(RuntimeError):
    """The METEOR jar exited, produced unparseable output, or did not answer in time."""


class MeteorTimeout(MeteorError):
    """The METEOR jar did not answer within the deadline (it was killed)."""


class MeteorScorer:
    """A METEOR 1.5 subprocess in one labelled mode, with a deadline on every exchange.

    Protocol (the same as pycocoevalcap's Meteor): for each segment write
    ``SCORE ||| ref1 ||| ... ||| refN ||| hyp`` and read one line of statistics; then write
    ``EVAL ||| stats1 ||| ... ||| statsM`` and read M per-segment scores followed by the corpus score.
    A reader thread turns stdout lines into a queue so every read can time out; a timer kills the
    process if a write blocks (the jar stopped reading). Use as a context manager or call close().
    """

    def __init__(self, mode: MeteorMode = "en", *, timeout_s: float = 120.0, java: str = "java",
                 jar: Path | str = METEOR_JAR, mem: str = "2G", command: Sequence[str] | None = None) -> None:
        if mode not in METEOR_FLAGS:
            raise ValueError(f"unknown METEOR mode {mode!r}: use one of {sorted(METEOR_FLAGS)}")
        self.mode, self.timeout_s = mode, timeout_s
        # `command` replaces the whole command line (tests point it at programs that hang or die).
        self.command = list(command) if command is not None else [
            java, "-jar", f"-Xmx{mem}", str(jar), "-", "-", "-stdio", *METEOR_FLAGS[mode]]
        self._lock = threading.Lock()
        self._stderr: deque[str] = deque(maxlen=40)
        self._lines: queue.Queue[str | None] = queue.Queue()
        try:
            self._proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE)
        except OSError as e:
            raise MeteorError(f"cannot start METEOR ({self.command[0]}): {e}") from e
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    # -- plumbing

    def _pump_stdout(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace").strip())
        self._lines.put(None)  # EOF: the jar exited

    def _pump_stderr(self) -> None:
        # Drained continuously: a full stderr pipe would block the jar (one more way to deadlock).
        assert self._proc.stderr is not None
        for raw in self._proc.stderr:
            self._stderr.append(raw.decode("utf-8", "replace").rstrip())

    def _describe(self) -> str:
        code = self._proc.poll()
        tail = " | ".join(list(self._stderr)[-6:]) or "(no stderr)"
        return f"METEOR[{self.mode}] {' '.join(self.command)!r} (exit code {code}): {tail}"

    def _write(self, line: str) -> None:
        assert self._proc.stdin is not None
        timer = threading.Timer(self.timeout_s, self._proc.kill)
        timer.start()
        try:
            self._proc.stdin.write((line + "\n").encode("utf-8"))
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as e:
            raise MeteorError(f"cannot write to {self._describe()}") from e
        finally:
            timer.cancel()

    def _read(self) -> str:
        try:
            line = self._lines.get(timeout=self.timeout_s)
        except queue.Empty:
            self._proc.kill()
            raise MeteorTimeout(f"no answer within {self.timeout_s:g} s from {self._describe()}; "
                                f"the process was killed") from None
        if line is None:
            self._proc.wait()
            raise MeteorError(f"the jar exited: {self._describe()}")
        return line

    def _float(self, line: str) -> float:
        try:
            return float(line)
        except ValueError:
            raise MeteorError(f"unexpected METEOR output {line[:200]!r} from {self._describe()}") from None

    @staticmethod
    def _clean(text: str) -> str:
        # '|||' separates fields and a newline ends the command: neither may occur inside a caption.
        return " ".join(text.replace("|||", " ").split())

    # -- API

    def compute_score(self, gts: Mapping[Hashable, list[str]], res: Mapping[Hashable, list[str]]
                      ) -> tuple[float, list[float]]:
        """pycocoevalcap's scorer interface: corpus METEOR and per-image scores, in gts key order."""
        if gts.keys() != res.keys():
            raise CaptionInputError("METEOR: references and hypotheses have different ids")
        with self._lock:
            stats = []
            for key in gts:
                refs = " ||| ".join(self._clean(r) for r in gts[key])
                self._write(f"SCORE ||| {refs} ||| {self._clean(res[key][0])}")
                stats.append(self._read())
            self._write("EVAL ||| " + " ||| ".join(stats))
            per_image = [self._float(self._read()) for _ in stats]
            return self._float(self._read()), per_image

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self._proc.stdin is not None
                self._proc.stdin.close()
            self._proc.kill()
        self._proc.wait()

    def __enter__(self) -> MeteorScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _one_line(text: str) -> str:
    # str.split() also splits on \r, \x0b, \x1c-\x1e, \x85, \u2028, \u2029: any of them inside a caption
    # would shift PTBTokenizer's line-aligned output onto the wrong image.
    return " ".join(text.split())


def ptb_tokenize(refs: Mapping[Hashable, Sequence[str]], hyps: Mapping[Hashable, str]
                 ) -> tuple[dict[Hashable, list[str]], dict[Hashable, list[str]]]:
    """Tokenize references and hypotheses with one PTBTokenizer (one JVM) run."""
    joint: dict[tuple[str, Hashable], list[dict[str, str]]] = {}
    for key, captions in refs.items():
        joint[("r", key)] = [{"caption": _one_line(c)} for c in captions]
    for key, hyp in hyps.items():
        joint[("h", key)] = [{"caption": _one_line(hyp)}]
    out = PTBTokenizer().tokenize(joint)
    return ({k: out[("r", k)] for k in refs}, {k: out[("h", k)] for k in hyps})


def _check(refs: Mapping[Hashable, Sequence[str]], hyps: Mapping[Hashable, str]) -> None:
    if not refs:
        raise CaptionInputError("no images to score")
    missing, extra = set(refs) - set(hyps), set(hyps) - set(refs)
    if missing or extra:
        raise CaptionInputError(f"hypotheses missing for {len(missing)} ids (e.g. {sorted(map(str, missing))[:3]}), "
                                f"unexpected for {len(extra)} ids (e.g. {sorted(map(str, extra))[:3]})")
    for key, captions in refs.items():
        if isinstance(captions, str) or not captions or not all(isinstance(c, str) for c in captions):
            raise CaptionInputError(f"image {key!r}: references must be a non-empty list of strings")
        if not isinstance(hyps[key], str):
            raise CaptionInputError(f"image {key!r}: hypothesis must be a string, got {type(hyps[key]).__name__}")


def caption_scores(refs: Mapping[Hashable, Sequence[str]], hyps: Mapping[Hashable, str],
                   meteor_mode: Literal["en", "pt", "both", "none"] = "en", *, meteor_timeout_s: float = 120.0,
                   java: str = "java", meteor_scorers: Mapping[str, MeteorScorer] | None = None
                   ) -> dict[str, float]:
    """Corpus-level captioning scores in [0, 1] (CIDEr-D in [0, 10]), as COCOEvalCap computes them.

    refs: image id -> reference captions (>= 1); hyps: image id -> one generated caption (may be empty).
    Returns bleu1..bleu4, rouge_l, cider_d and meteor_en and/or meteor_pt (the key names the mode);
    "none" skips METEOR (its English jar needs ~10-60 s to load its paraphrase table).
    meteor_scorers: already running scorers by mode, reused (and left open) instead of starting new jars.
    """
    if meteor_mode not in ("en", "pt", "both", "none"):
        raise ValueError(f"meteor_mode must be 'en', 'pt', 'both' or 'none', not {meteor_mode!r}")
    _check(refs, hyps)
    gts, res = ptb_tokenize(refs, hyps)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"bleu{n + 1}": float(b) for n, b in enumerate(bleu)}
    out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    out["cider_d"] = float(Cider().compute_score(gts, res)[0])
    modes = {"both": ("en", "pt"), "none": ()}.get(meteor_mode, (meteor_mode,))
    for mode in modes:
        given = (meteor_scorers or {}).get(mode)
        if given is not None:
            if given.mode != mode:
                raise ValueError(f"meteor_scorers[{mode!r}] runs mode {given.mode!r}")
            out[f"meteor_{mode}"] = float(given.compute_score(gts, res)[0])
            continue
        with MeteorScorer(mode, timeout_s=meteor_timeout_s, java=java) as meteor:  # type: ignore[arg-type]
            out[f"meteor_{mode}"] = float(meteor.compute_score(gts, res)[0])
    return out


def java_available(java: str = "java") -> bool:
    """Whether a Java runtime can be started (PTBTokenizer and METEOR need one)."""
    try:
        return subprocess.run([java, "-version"], capture_output=True, timeout=60, env=os.environ).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
