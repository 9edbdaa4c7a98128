"""Quality flags for EN -> PT-PT translations: one small detector per failure mode, each returning a reason.

Detectors (thesis §5.2 failure modes, SPEC §2):
- ``empty``: the output is empty or whitespace only.
- ``untranslated``: the output equals the source after normalisation, or is mostly English (py3langid,
  whose model ships inside the wheel: nothing is downloaded at run time); never an output made only of
  frequent Portuguese words (wordfreq's word lists, also inside its wheel: 'animal', 'hospital').
- ``brazilian``: PT-BR lexicon, spellings and grammar (progressive gerund, article-less possessives,
  sentence-initial clitics).  Only markers that are NOT also PT-PT are listed; the reason names each match
  with its PT-PT counterpart so a reader sees why.
- ``truncated``: output much shorter than the source (ratio calibrated on the gold set), numbers of the
  source missing from the output in every rendering ('42' may be 'quarenta e dois', '10:30' '10h30'), or
  the output ending on a dangling article/preposition.
- ``repetitive``: an n-gram repeated back to back or many times, a sub-word piece looping inside one
  'word' (a decoder loop on pieces without word boundaries), or an output far longer than the source; a
  repetition the source has too is faithful.
- ``low_score``: the engine's mean token log-probability below a threshold (only when a score is given).

Each detector returns ``None`` (clean) or a reason string that starts with the flag name and carries the
evidence, e.g. ``"brazilian: ônibus (PT-PT autocarro); está fazendo (PT-PT está a fazer)"``.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import lru_cache

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

EMPTY = "empty"
UNTRANSLATED = "untranslated"
BRAZILIAN = "brazilian"
TRUNCATED = "truncated"
REPETITIVE = "repetitive"
LOW_SCORE = "low_score"
FLAG_NAMES: tuple[str, ...] = (EMPTY, UNTRANSLATED, BRAZILIAN, TRUNCATED, REPETITIVE, LOW_SCORE)


class QualityThresholds(BaseModel):
    """Thresholds of the quality detectors (the `[quality]` table of a run profile)."""

    model_config = ConfigDict(extra="forbid")

    english_prob: float = Field(
        0.9, ge=0.5, le=1.0,
        description="untranslated: py3langid probability of 'en' (among `langid_languages`) at or above "
        "which an output is 'mostly English'.",
    )
    langid_min_words: int = Field(
        3, ge=1, description="untranslated: language ID runs only on outputs with at least this many words "
        "(it is unreliable on one or two words; identity with the source still catches those).",
    )
    langid_languages: tuple[str, ...] = Field(
        ("en", "pt", "es", "gl", "fr", "it"),
        description="untranslated: languages py3langid chooses among (restricting the set sharpens it).",
    )
    min_length_ratio: float = Field(
        0.55, gt=0.0,
        description="truncated: chars(output)/chars(source) below this flags. Calibrated on the gold set: "
        "for sources >= 40 chars the PT-PT ratio has min 0.595, 1st percentile 0.70, median 1.08, so no gold "
        "row trips it. Concise PT-PT reaches 0.6, so a cut that keeps more than 55% of the length is left "
        "to the number and dangling-word checks.",
    )
    min_source_chars: int = Field(
        40, ge=1, description="truncated: the length-ratio check applies only to sources at least this long "
        "(short strings such as 'is there any juice?' -> 'há sumo?' have erratic ratios). repetitive: shorter "
        "sources count as this long, so a runaway output of a short source ('yes' -> 100+ chars) still flags.",
    )
    max_length_ratio: float = Field(
        2.5, gt=1.0, description="repetitive: chars(output)/max(chars(source), min_source_chars) above this "
        "flags (gold PT-PT max 1.35 so measured; its longest output for a short source is 54 chars).",
    )
    short_source_chars: int = Field(
        20, ge=1, description="repetitive: a source shorter than `min_source_chars` counts as this many chars "
        "for the length check, so an output over max_length_ratio x this ('yes' -> 87 chars, a hallucinated "
        "reply) flags. Gold PT-PT peaks at 1.5 x max(source, 20) chars ('is the bus moving?').",
    )
    portuguese_zipf: float = Field(
        2.0, ge=0.0, description="untranslated: a word is Portuguese when its wordfreq Zipf frequency in "
        "Portuguese is at least this ...",
    )
    portuguese_zipf_margin: float = Field(
        0.75, ge=0.0, description="... and at least its English Zipf frequency minus this margin ('animal' "
        "4.75 pt / 4.81 en is Portuguese; 'green' 4.28 / 5.13 and 'dog' 3.93 / 5.10 are not). An output "
        "made only of Portuguese words is never 'untranslated'.",
    )
    ngram_max_repeats: int = Field(
        3, ge=2, description="repetitive: a word 2- or 3-gram occurring this many times anywhere flags.",
    )
    tandem_copies: int = Field(
        3, ge=2, description="repetitive: an n-gram (n <= 4) repeated this many times back to back flags "
        "('muito muito muito'), as does a piece of 2-10 characters (with a letter) repeated so inside one "
        "word ('qjqjqj', 'zzzzzz').",
    )
    min_score: float | None = Field(
        -1.5, description="low_score: mean token log-probability (nats) below this flags; None disables.",
    )


DEFAULT_THRESHOLDS = QualityThresholds()
_WORD = re.compile(r"\w+(?:[-']\w+)*")
_PUNCT = re.compile(r"[^\w\s]+")


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def normalise(text: str) -> str:
    """Casefolded, NFKC, punctuation removed, whitespace collapsed: the form compared for identity."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCT.sub(" ", text).split())


def words(text: str) -> list[str]:
    """Lower-cased word tokens (accents kept; hyphenated clitics such as 'vê-se' stay one token)."""
    return [w.casefold() for w in _WORD.findall(_nfc(text))]


# --- empty -------------------------------------------------------------------------------------------

def detect_empty(text_pt: str | None) -> str | None:
    """Empty or whitespace-only output."""
    if text_pt is None or not text_pt.strip():
        return f"{EMPTY}: output is {'null' if text_pt is None else 'blank'}"
    return None


# --- untranslated ------------------------------------------------------------------------------------

# Strings legitimately identical in EN and PT-PT; identity with the source is not evidence for these.
IDENTICAL_OK = frozenset({"ok", "okay", "tv", "pc", "dvd", "cd", "pizza", "selfie", "wifi", "wi fi", "hamburger",
                          "jazz", "rock", "golf", "surf", "ski", "snowboard", "skate", "hotel", "taxi", "bar"})
# English function words that are not Portuguese words: language ID only runs when one is present.
_EN_HINTS = frozenset({"the", "and", "of", "with", "is", "are", "on", "at", "for", "his", "her", "their", "this",
                       "that", "it", "to", "from", "by", "an", "in", "was", "be", "its", "they", "there", "what",
                       "how", "yes", "can", "you", "he", "she", "we", "has", "have", "does", "not", "some"})


@lru_cache(maxsize=4)
def _identifier(languages: tuple[str, ...]):
    # The model file (py3langid/data/model.npz.xz) is inside the wheel; loading it reads that file only.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(languages))
    return ident


def english_probability(text: str, languages: tuple[str, ...] = DEFAULT_THRESHOLDS.langid_languages) -> float:
    """P(en | text) by py3langid restricted to `languages` (normalised probabilities)."""
    for lang, prob in _identifier(tuple(languages)).rank(text):
        if lang == "en":
            return float(prob)
    return 0.0


@lru_cache(maxsize=2)
def _zipf_table(lang: str) -> dict[str, float]:
    # wordfreq's word lists ship inside its wheel (data/*.msgpack.gz): nothing is downloaded.
    from wordfreq import get_frequency_dict

    return {w: math.log10(f) + 9.0 for w, f in get_frequency_dict(lang).items() if f > 0}


def zipf(word: str, lang: str) -> float:
    """wordfreq Zipf frequency (log10 per billion words) of a lower-case word in `lang`; 0 when unknown."""
    return _zipf_table(lang).get(word, 0.0)


def is_portuguese_word(word: str, th: QualityThresholds = DEFAULT_THRESHOLDS) -> bool:
    """A frequent Portuguese word that is not much more frequent in English ('animal', 'hospital', 'banana'
    are; 'dog', 'green', 'the' are not).  Tokens without a letter ('2', '10h') count as Portuguese."""
    if not any(c.isalpha() for c in word):
        return True
    pt = zipf(word, "pt")
    return pt >= th.portuguese_zipf and pt >= zipf(word, "en") - th.portuguese_zipf_margin


def detect_untranslated(text_en: str, text_pt: str, th: QualityThresholds = DEFAULT_THRESHOLDS) -> str | None:
    """Output identical to the source (after normalisation), or mostly English by language ID; never an
    output whose every word is frequent Portuguese (wordfreq), e.g. the VQA answers 'animal', 'normal'."""
    norm_pt = normalise(text_pt)
    if norm_pt and norm_pt == normalise(text_en):
        # Numbers, codes, shared loanwords ('2', 'ok', 'tv') and words that are Portuguese too
        # ('hospital', 'zebra') are correctly left as they are.
        if any(c.isalpha() for c in norm_pt) and norm_pt not in IDENTICAL_OK and \
                not all(is_portuguese_word(w, th) for w in norm_pt.split()):
            return f"{UNTRANSLATED}: identical to the source"
        return None
    toks = words(text_pt)
    if len(toks) < th.langid_min_words:
        return None
    # Language ID is the costly step: run it only when the output has an English function word or copies
    # at least a third of its words from the source (a Portuguese output has neither).
    source_words = set(words(text_en))
    copied = sum(t in source_words for t in toks)
    if not _EN_HINTS.intersection(toks) and copied * 3 < len(toks):
        return None
    if all(is_portuguese_word(t, th) for t in toks):
        return None
    p_en = english_probability(text_pt, th.langid_languages)
    if p_en >= th.english_prob:
        return f"{UNTRANSLATED}: language ID says English (p={p_en:.2f})"
    return None


# --- brazilian ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Marker:
    """A PT-BR marker: a regex (case-insensitive, Unicode word boundaries), the PT-PT form, an optional guard.

    guard(text, match) -> bool: extra context check, e.g. 'time' only in a team sense.
    """

    pattern: str
    ptpt: str
    guard: Callable[[str, re.Match[str]], bool] | None = None


def _w(*alternatives: str) -> str:
    return r"\b(?:" + "|".join(alternatives) + r")\b"


_TEAM_CONTEXT = re.compile(
    r"\b(?:o|um|do|no|ao|pelo|seu|meu|nosso|teu|esse|este|dum|num|os|dos|nos|aos|pelos|seus|meus|dois|três|que|qual)"
    r"\s+times?\b"
    r"|\btimes?\s+(?:de|do|da|dos)\s+(?:futebol|basquete|basquetebol|vôlei|voleibol|beisebol|basebol|hóquei|"
    r"rugby|râguebi|handebol|andebol|críquete|casa|visitante|futsal|polo)\b"
    r"|\btimes?\s+(?:adversário|rival|vencedor|campeão|visitante|local|feminino|masculino)s?\b",
    re.IGNORECASE,
)
_PREV_WORD = re.compile(r"(\w+)\W*$")


def _team_sense(text: str, m: re.Match[str]) -> bool:
    # 'time' is also English; only a Portuguese article/possessive or a sport next to it makes it 'team'.
    return any(t.start() <= m.start() < t.end() for t in _TEAM_CONTEXT.finditer(text))


def _prev_word(text: str, m: re.Match[str]) -> str:
    pm = _PREV_WORD.search(text[: m.start()])
    return pm.group(1).casefold() if pm else ""


def _grass_sense(text: str, m: re.Match[str]) -> bool:
    # 'grama' is also the unit gram ('100 gramas', 'um grama'); the lawn sense follows a preposition.
    return _prev_word(text, m) in {"na", "a", "da", "pela", "sobre", "nas", "as", "das", "pelas", "em", "de"} and \
        not re.match(r"\d", text[m.end():].strip()[:1] or "x")


def _colour_sense(text: str, m: re.Match[str]) -> bool:
    # 'cinza' is PT-PT 'ash' ('a cinza', 'cor de cinza'); as a colour adjective after a noun it is PT-BR
    # (PT-PT 'cinzento').
    return _prev_word(text, m) not in {"", "a", "as", "da", "das", "de", "na", "nas", "em", "e", "cinza", "pó"}


BRAZILIAN_LEXICON: tuple[Marker, ...] = (
    Marker(_w("ônibus", "onibus"), "autocarro"),
    Marker(_w("trem", "trens"), "comboio"),
    Marker(_w("celular", "celulares"), "telemóvel"),
    Marker(_w("geladeiras?"), "frigorífico"),
    Marker(_w("sorvetes?", "sorveteria"), "gelado"),
    Marker(_w("sucos?"), "sumo"),
    Marker(r"\bcafé da manhã\b", "pequeno-almoço"),
    Marker(_w("banheiros?"), "casa de banho"),
    Marker(_w("caminhão", "caminhões", "caminhonetes?", "caminhoneir[oa]s?"), "camião / carrinha / camionista"),
    Marker(_w("times?"), "equipa", _team_sense),
    Marker(_w("equipes?"), "equipa"),
    Marker(_w("esportes?", "esportiv[oa]s?"), "desporto / desportivo"),
    Marker(_w("basquete"), "basquetebol"),
    Marker(_w("vôlei"), "voleibol"),
    Marker(_w("goleir[oa]s?"), "guarda-redes"),
    Marker(_w("gramad[oa]s?"), "relvado / relvada"),
    Marker(_w("arquibancadas?"), "bancada"),
    Marker(_w("torcedor", "torcedores", "torcida"), "adepto / claque"),
    Marker(_w("gramas?"), "relva", _grass_sense),
    Marker(_w("garot[oa]s?", "garotinh[oa]s?"), "rapaz / rapariga / miúdo"),
    Marker(_w("cachorr[oa]s?", "cachorrinh[oa]s?"), "cão"),
    Marker(_w("gol", "gols"), "golo"),
    Marker(_w("camisetas?"), "t-shirt / camisola"),
    Marker(_w("suéter", "suéteres"), "camisola"),
    Marker(_w("recepç\\w+", "recepcionistas?"), "receção / rececionista"),
    Marker(_w("xícaras?"), "chávena"),
    Marker(_w("abacaxis?"), "ananás"),
    Marker(_w("mamão", "mamões"), "papaia"),
    Marker(_w("metrô"), "metro"),
    Marker(_w("bondes?"), "elétrico"),
    Marker(_w("pedestres?"), "peão / passadeira"),
    Marker(_w("calçadão"), "passeio marítimo"),
    Marker(_w("aeromoças?"), "hospedeira"),
    Marker(_w("garçom", "garçons", "garçonete"), "empregado de mesa"),
    Marker(_w("açougues?"), "talho"),
    Marker(_w("cardápios?"), "ementa"),
    Marker(_w("vaso sanitário", "privada"), "sanita"),
    Marker(_w("fazendas?"), "quinta"),
    Marker(_w("terremotos?"), "terramoto"),
    # PT-PT contracts em + um(a) to num(a) in all but emphatic uses ('em um só dia', excluded by the guard).
    Marker(r"\bem uma?s?\b", "num / numa", lambda text, m: not text[m.end():].lstrip().startswith(("só", "dos", "das"))),
    Marker(_w("marrons?", "marrom"), "castanho"),
    Marker(_w("cinza", "cinzas"), "cinzento", _colour_sense),
    Marker(_w("moletons?", "moletom"), "sweatshirt"),
    Marker(_w("maiôs?"), "fato de banho"),
    Marker(_w("brócolis"), "brócolos"),
    Marker(_w("beisebol"), "basebol"),
    Marker(_w("surfe"), "surf"),
    Marker(_w("mouses?"), "rato"),
    Marker(r"\b(?:de terno|ternos? e gravata)\b", "de fato"),
    Marker(r"\btelas? d[eoa]s? (?:computador|televisão|tv|telefone|celular|telemóvel|monitor|portátil|tablet)\b",
           "ecrã"),
    Marker(_w("carona"), "boleia"),
    Marker(_w("tchau"), "adeus"),
    Marker(_w("usuári[oa]s?"), "utilizador"),
    Marker(_w("contatos?"), "contacto"),
    Marker(_w("registros?"), "registo"),
    Marker(_w("seção", "seções"), "secção"),
    Marker(_w("planej\\w*"), "planear"),
    Marker(r"\b(?:o fato de que|é fato que|de fato,)", "facto"),
    # Spellings: PT-BR circumflex where PT-PT writes an acute (open vowel before m/n).
    Marker(_w("tênis", "bebês?", "prêmios?", "gêmeos?", "gêmeas?", "gênero", "gêneros", "fenômenos?",
              "quilômetros?", "câmeras?", "judô", "bidê", "antônio", "econômic\\w*", "acadêmic\\w*",
              "polêmic\\w*", "anônim\\w*", "cômic\\w*", "atômic\\w*", "tônic\\w*", "gastronômic\\w*",
              "astronômic\\w*", "eletrônic\\w*", "telefônic\\w*", "cerimôni\\w*", "colôni\\w*", "insôni\\w*",
              "patrimôni\\w*", "demôni\\w*", "matrimôni\\w*", "pênaltis?"),
           "acute accent (ténis, bebé, prémio, gémeos, ...)"),
)

_ESTAR = ("estou|estás|está|estamos|estão|estava|estavas|estávamos|estavam|estive|esteve|estiveram|estar|"
          "estará|estarão|estaria|estariam|esteja|estejam|estivesse|estivessem|estando|estiver|estiverem")
# Words ending like a gerund that are not one (or gerunds PT-PT uses too, e.g. 'tendo', 'sendo').
GERUND_STOP = frozenset({
    "quando", "comando", "comandos", "bando", "brando", "nefando", "contrabando", "fernando", "orlando", "armando",
    "rolando", "doutorando", "mestrando", "formando", "educando", "graduando", "venerando", "tremendo",
    "estupendo", "horrendo", "remendo", "dividendo", "reverendo", "adendo", "crescendo", "lindo", "vindo",
    "bem-vindo", "benvindo", "infindo", "arlindo", "tendo", "sendo", "havendo", "estando", "mando",
})
_PROGRESSIVE = re.compile(
    rf"\b(?:{_ESTAR})\s+(?:(?:se|me|te|lhe|nos|sempre|ainda|já|só|também|não)\s+)?(\w+(?:ando|endo|indo))\b",
    re.IGNORECASE,
)
_GERUND = re.compile(r"\b(\w+(?:ando|endo|indo))\b", re.IGNORECASE)
# Before a bare gerund these are fine in PT-PT ('vai andando', 'tendo sido') or mark a clause (',').
_GERUND_OK_BEFORE = frozenset({"vai", "vão", "ia", "iam", "ir", "vou", "vamos", "foi", "foram", "tendo", "sendo",
                               "estando", "havendo", "como", "em", "que"})
_INITIAL_CLITIC = re.compile(
    r"^\W*(?:(?:me|te|lhe|lhes)\s+\w+|se\s+(?:vê|veem|vêem|pode|podem|encontra|encontram|trata|nota|observa|"
    r"vêm|mostra))\b",
    re.IGNORECASE,
)
# A subject noun phrase then a proclitic 'se' ('o sol se põe'): PT-PT puts it after the verb ('põe-se').
# 'se calhar' (PT-PT 'perhaps') is the exception.
_SUBJECT_PROCLISIS = re.compile(r"^\W*(?:o|a|os|as|um|uma)\s+\w+\s+(?:se|me|lhe)\s+(?!calhar\b)\w+", re.IGNORECASE)
_BARE_POSSESSIVE = re.compile(r"\b(?:em|de|com|para)\s+(?:seu|sua|seus|suas)\b", re.IGNORECASE)


def _grammar_markers(text: str) -> list[str]:
    found: list[str] = []
    for m in _PROGRESSIVE.finditer(text):
        if m.group(1).casefold() not in GERUND_STOP or m.group(1).casefold() in {"sendo", "tendo"}:
            found.append(f"{m.group(0)} (PT-PT estar a + infinitive)")
    if not found:
        # A gerund right after a noun phrase ('homem andando de bicicleta') is PT-BR; PT-PT writes
        # 'a andar'.  After a comma (adverbial gerund) or at the start it is acceptable PT-PT: skipped.
        for m in _GERUND.finditer(text):
            g = m.group(1).casefold()
            before = text[: m.start()].rstrip()
            if len(g) < 5 or g in GERUND_STOP or not before or before[-1] in ",;:(—–-":
                continue
            if _prev_word(text, m) in _GERUND_OK_BEFORE:
                continue
            found.append(f"{_prev_word(text, m)} {m.group(1)} (PT-PT a + infinitive)")
    m = _INITIAL_CLITIC.search(text) or _SUBJECT_PROCLISIS.search(text)
    if m:
        found.append(f"{m.group(0).strip()} (PT-PT enclisis, e.g. vê-se)")
    for m in _BARE_POSSESSIVE.finditer(text):
        found.append(f"{m.group(0)} (PT-PT article before possessive, e.g. na sua)")
    return found


# The auxiliary + clitic + infinitive order ('vou te ligar', 'pode me ajudar'): PT-PT attaches the clitic
# to the infinitive or the auxiliary with a hyphen ('vou ligar-te', 'vou-te ligar').
_AUX_PROCLISIS = re.compile(
    r"\b(?:vou|vais|vai|vamos|vão|ia|iam|posso|podes|pode|podemos|podem|quero|queres|quer|queremos|querem|"
    r"queria|devo|deve|devem|preciso|precisa|tenho de|tem de|tenho que|tem que)\s+(?:te|me|lhe|lhes|nos)\s+"
    r"\w+(?:ar|er|ir|ôr|or)\b",
    re.IGNORECASE,
)
# 'there is/are' rendered with 'ter' ('tem um gato no sofá'): PT-PT uses 'haver' ('há um gato').
_EN_EXISTENTIAL = re.compile(r"\bthere\s*(?:is|are|was|were|'s|’s|'re)\b|\b(?:is|are|was|were)\s+there\b",
                             re.IGNORECASE)
_PT_EXISTENTIAL_TER = re.compile(r"\b(?:tem|tinha|teve|terá)\b", re.IGNORECASE)
_PT_HAVER = re.compile(r"\b(?:há|havia|houve|haverá|haja|existe|existem|existia|existiam)\b", re.IGNORECASE)
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s*|[\"“«(]\s*)$")


def _lexicon_guard(text: str, m: re.Match[str]) -> bool:
    """False for a match inside a hyphenated compound ('time-lapse', 'cachorro-quente') or a capitalised
    proper noun in mid-sentence ('o restaurante Trem Azul')."""
    if text[m.end():m.end() + 1] == "-" or (m.start() > 0 and text[m.start() - 1] == "-"):
        return False
    return not (m.group(0)[:1].isupper() and not _SENTENCE_START.search(text[:m.start()]))


def brazilian_markers(text_pt: str, text_en: str = "") -> list[str]:
    """Every PT-BR marker found in `text_pt`, each as 'match (PT-PT form)'.  `text_en` (optional) lets the
    existential 'tem' be told from the possessive one: only 'there is' rendered with 'ter' counts."""
    text = _nfc(text_pt)
    found = []
    # One combined scan first: most rows match no marker, and one pass beats ~70 separate searches.
    for marker in _COMPILED_LEXICON if _ANY_LEXICON.search(text) else ():
        for m in marker[0].finditer(text):
            if _lexicon_guard(text, m) and (marker[2] is None or marker[2](text, m)):
                found.append(f"{m.group(0)} (PT-PT {marker[1]})")
    for m in _AUX_PROCLISIS.finditer(text):
        found.append(f"{m.group(0)} (PT-PT enclisis, e.g. vou ligar-te)")
    if text_en and _EN_EXISTENTIAL.search(text_en) and not _PT_HAVER.search(text):
        m = _PT_EXISTENTIAL_TER.search(text)
        if m:
            found.append(f"{m.group(0)} for 'there is' (PT-PT há)")
    return found + _grammar_markers(text)


_COMPILED_LEXICON = [(re.compile(mk.pattern, re.IGNORECASE), mk.ptpt, mk.guard) for mk in BRAZILIAN_LEXICON]
_ANY_LEXICON = re.compile("|".join(f"(?:{mk.pattern})" for mk in BRAZILIAN_LEXICON), re.IGNORECASE)


def detect_brazilian(text_pt: str, text_en: str = "") -> str | None:
    """PT-BR lexicon, spelling or grammar; the reason lists every marker with its PT-PT form."""
    found = brazilian_markers(text_pt, text_en)
    return f"{BRAZILIAN}: " + "; ".join(dict.fromkeys(found)) if found else None


# --- truncated ---------------------------------------------------------------------------------------

_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
# A PT sentence never ends on an article or preposition: the engine stopped mid-phrase.
_DANGLING = frozenset({"de", "do", "da", "dos", "das", "em", "no", "na", "nos", "nas", "o", "a", "os", "as", "um",
                       "uma", "uns", "umas", "e", "para", "com", "por", "pelo", "pela", "pelos", "pelas", "ao",
                       "à", "aos", "às", "num", "numa", "dum", "duma", "sobre", "entre", "sem"})

# --- numbers rendered differently: '42' -> 'quarenta e dois', '10:30' -> '10h30', '1,000' -> '1000' -----

_PT_NUMBER_WORDS: dict[str, float] = {
    "zero": 0, "um": 1, "uma": 1, "dois": 2, "duas": 2, "três": 3, "quatro": 4, "cinco": 5, "seis": 6,
    "sete": 7, "oito": 8, "nove": 9, "dez": 10, "onze": 11, "doze": 12, "treze": 13, "catorze": 14,
    "quatorze": 14, "quinze": 15, "dezasseis": 16, "dezesseis": 16, "dezassete": 17, "dezessete": 17,
    "dezoito": 18, "dezanove": 19, "dezenove": 19, "vinte": 20, "trinta": 30, "quarenta": 40, "cinquenta": 50,
    "sessenta": 60, "setenta": 70, "oitenta": 80, "noventa": 90, "cem": 100, "cento": 100, "duzentos": 200,
    "duzentas": 200, "trezentos": 300, "trezentas": 300, "quatrocentos": 400, "quatrocentas": 400,
    "quinhentos": 500, "quinhentas": 500, "seiscentos": 600, "seiscentas": 600, "setecentos": 700,
    "setecentas": 700, "oitocentos": 800, "oitocentas": 800, "novecentos": 900, "novecentas": 900,
    "meio": 0.5, "meia": 0.5, "dúzia": 12,
    "primeiro": 1, "primeira": 1, "segundo": 2, "segunda": 2, "terceiro": 3, "terceira": 3, "quarto": 4,
    "quarta": 4, "quinto": 5, "quinta": 5, "sexto": 6, "sexta": 6, "sétimo": 7, "sétima": 7, "oitavo": 8,
    "oitava": 8, "nono": 9, "nona": 9, "décimo": 10, "décima": 10, "vigésimo": 20, "vigésima": 20,
    "trigésimo": 30, "trigésima": 30, "quadragésimo": 40, "quinquagésimo": 50, "centésimo": 100,
}
_PT_MULTIPLIERS = {"mil": 1e3, "milhão": 1e6, "milhões": 1e6, "bilião": 1e12, "biliões": 1e12, "bilhão": 1e9,
                   "bilhões": 1e9}
_PT_NUMBER_RUN = re.compile(
    r"\b(?:" + "|".join(sorted(list(_PT_NUMBER_WORDS) + list(_PT_MULTIPLIERS), key=len, reverse=True)) + r")"
    r"(?:\s+(?:e\s+)?(?:" + "|".join(sorted(list(_PT_NUMBER_WORDS) + list(_PT_MULTIPLIERS), key=len,
                                            reverse=True)) + r")\b)*\b", re.IGNORECASE)
_TIMES_PT = re.compile(r"\b(\d{1,2})\s*(?:[:h.]|horas?\s+e)\s*(\d{2})\b|\b(\d{1,2})\s*h(?:oras?)?\b", re.IGNORECASE)
_NAMED_TIMES = {"meio-dia": 12 * 60, "meia-noite": 0}
_THOUSANDS_PT = re.compile(r"\b\d{1,3}(?:[ \u00a0\u202f.]\d{3})+\b")
_EN_NUMBER = re.compile(r"(\d+(?:[.,:]\d+)*)(\s*(?:[ap]\.?m\b\.?)|s\b|st\b|nd\b|rd\b|th\b)?", re.IGNORECASE)
_FRACTION = re.compile(r"\b(\d+)/(\d+)\b")


def _pt_values(text: str) -> tuple[set[float], set[int]]:
    """(numbers, times in minutes) an output states, in digits or in words ('dois milhões', '10h30')."""
    low = text.casefold()
    values: set[float] = set()
    for m in _THOUSANDS_PT.finditer(low):
        values.add(float(re.sub(r"\D", "", m.group(0))))
    for n in _NUMBER.findall(low):
        values.update(_digit_readings(n))
    for m in _PT_NUMBER_RUN.finditer(low):
        total, current = 0.0, 0.0
        for w in re.findall(r"\w+", m.group(0)):
            if w in _PT_MULTIPLIERS:
                total += (current or 1) * _PT_MULTIPLIERS[w]
                current = 0.0
            elif w in _PT_NUMBER_WORDS:
                values.add(float(_PT_NUMBER_WORDS[w]))
                current += _PT_NUMBER_WORDS[w]
        values.add(total + current)
    times: set[int] = set()
    for m in _TIMES_PT.finditer(low):
        hour = int(m.group(1) or m.group(3))
        times.add(hour * 60 + int(m.group(2) or 0))
    for name, minutes in _NAMED_TIMES.items():
        if name in low:
            times.add(minutes)
            if f"{name} e meia" in low:
                times.add(minutes + 30)
    for v in values:  # 'às 9' / 'nove e meia': an hour stated as a plain number
        if 0 <= v <= 24:
            times.add(int(v * 60))
            times.add(int(v) * 60 + (30 if v % 1 else 0))
    return values, times


def _digit_readings(n: str) -> set[float]:
    """Every value a digit string can mean: '1,000' -> {1000, 1.0}, '3.5' -> {3.5, 35}, '10:30' -> {10, 30}."""
    out: set[float] = set()
    parts = re.split(r"[.,:]", n)
    if all(len(p) == 3 for p in parts[1:]):
        out.add(float("".join(parts)))  # a thousands separator
    if len(parts) == 2:
        out.add(float(f"{parts[0]}.{parts[1]}"))  # a decimal point or comma
    out.update(float(p) for p in parts if p)
    return out


def _source_number_ok(m: re.Match[str], src_low: str, values: set[float], times: set[int]) -> bool:
    """Whether the output states the source number `m` in some rendering."""
    n, suffix = m.group(1), (m.group(2) or "").strip().casefold().replace(".", "")
    if ":" in n:
        hour, minute = (int(x) for x in n.split(":")[:2])
        pm = suffix == "pm" or re.match(r"\s*p\.?m\b", src_low[m.end():]) is not None
        return bool({hour * 60 + minute, (hour + 12) * 60 + minute if pm and hour < 12 else -1} & times)
    if suffix in ("am", "pm"):
        hour = int(n.split(".")[0].split(",")[0])
        return bool({hour * 60, (hour + 12) * 60 if suffix == "pm" and hour < 12 else -1} & times)
    readings: set[float] = set()
    if "," in n and all(len(p) == 3 for p in n.split(",")[1:]):
        readings.add(float(n.replace(",", "")))  # EN thousands separator
    elif "." in n and n.count(".") == 1:
        readings.add(float(n))  # EN decimal point
    else:
        readings.add(float(re.sub(r"\D", "", n) or 0))
    if suffix == "s" and readings and max(readings) >= 1900:  # the 1980s -> os anos 80
        readings.add(max(readings) % 100)
    return bool(readings & values)


def missing_source_numbers(text_en: str, text_pt: str) -> list[str]:
    """Source numbers the output states in no rendering: digits with either separator, PT number and
    ordinal words, 24-hour times ('6:45 pm' -> '18h45'), decades ('1980s' -> 'anos 80'), halves."""
    src_numbers = _NUMBER.findall(text_en)
    if not src_numbers or set(src_numbers) <= set(_NUMBER.findall(text_pt)):
        return []  # every source number is in the output verbatim, which every reading below accepts
    src_low = text_en.casefold()
    values, times = _pt_values(text_pt)
    missing: list[str] = []
    fractions = {m.span(): float(m.group(1)) / float(m.group(2)) for m in _FRACTION.finditer(src_low)
                 if float(m.group(2))}
    covered = [span for span, v in fractions.items() if v in values]
    for m in _EN_NUMBER.finditer(src_low):
        if any(a <= m.start() < b for a, b in covered):
            continue
        if not _source_number_ok(m, src_low, values, times):
            missing.append(m.group(1))
    return missing


def detect_truncated(text_en: str, text_pt: str, th: QualityThresholds = DEFAULT_THRESHOLDS) -> str | None:
    """Output far shorter than the source, numbers of the source missing, or a dangling last word.

    Translation changes the words, so 'the source's last content words are missing' is checked through
    what survives translation: numbers, in whatever rendering (see `missing_source_numbers`).  Proper nouns
    are mostly hypernymised away in CC3M ('actor', 'person') and are not a reliable signal.  A last word
    copied from the end of the source ('the letter a' -> 'a letra a') is not dangling.
    """
    reasons = []
    src, out = text_en.strip(), text_pt.strip()
    if len(src) >= th.min_source_chars:
        ratio = len(out) / len(src)
        if ratio < th.min_length_ratio:
            reasons.append(f"length ratio {ratio:.2f} < {th.min_length_ratio:g}")
    if any(c.isdigit() for c in src):
        missing = missing_source_numbers(src, out)
        if missing:
            reasons.append("source numbers missing: " + ", ".join(dict.fromkeys(missing)))
    toks = words(out)
    if len(toks) >= 3 and toks[-1] in _DANGLING and not re.search(r"[.!?]\s*$", out):
        src_toks = words(src)
        if not src_toks or src_toks[-1] != toks[-1]:
            reasons.append(f"ends on '{toks[-1]}'")
    return f"{TRUNCATED}: " + "; ".join(reasons) if reasons else None


# --- repetitive --------------------------------------------------------------------------------------

# A piece of 2-10 word characters repeated back to back inside one word: subword decoder loops glue their
# pieces together ('vermelhaqjqjqjqjqjq'), so the word-level n-gram checks see one long unique word.
_PIECE_LOOP = re.compile(r"(\w{2,10}?)\1+")


def _piece_loop(text: str) -> tuple[str, int] | None:
    """The piece looping most often inside one word (first of equals), with its number of copies."""
    best: tuple[str, int] | None = None
    for m in _PIECE_LOOP.finditer(text):
        piece = m.group(1)
        if any(c.isalpha() for c in piece):  # not '121212'
            copies = len(m.group(0)) // len(piece)
            if best is None or copies > best[1]:
                best = (piece, copies)
    return best


def _repetition(toks: list[str], text_cf: str, th: QualityThresholds) -> tuple[list[str], int]:
    """(reasons, copies): the repetition found in one text by the n-gram and piece checks, and the largest
    number of copies of any n-gram (n <= 4) back to back, 2-/3-gram anywhere, or piece in a word."""
    k = th.tandem_copies
    reasons: list[str] = []
    level = 1
    for n in range(1, 5):
        for i in range(0, len(toks) - n + 1):
            block = toks[i:i + n]
            c = 1
            while toks[i + c * n:i + (c + 1) * n] == block:
                c += 1
            if c >= k and not reasons:
                reasons.append(f"'{' '.join(block)}' x{k}+ in a row")
            level = max(level, c)
    for n in (3, 2):
        counts = Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
        if counts:
            gram, c = counts.most_common(1)[0]
            if c >= th.ngram_max_repeats and not reasons:
                reasons.append(f"'{' '.join(gram)}' x{c}")
            level = max(level, c)
    loop = _piece_loop(text_cf)
    if loop:
        piece, c = loop
        if c >= k and not reasons:
            reasons.append(f"'{piece}' x{k}+ in a row inside a word")
        level = max(level, c)
    return reasons, level


def detect_repetitive(text_en: str, text_pt: str, th: QualityThresholds = DEFAULT_THRESHOLDS) -> str | None:
    """Back-to-back repeated n-grams or sub-word pieces, an n-gram repeated many times, or an output far
    longer than the source (a source shorter than `min_source_chars` counts as `short_source_chars`).

    A repetition the source has too ('no no no' -> 'não não não', 'hahaha') is faithful: it flags only when
    the output has more than one copy beyond the source's largest repetition.
    """
    reasons, level = _repetition(words(text_pt), _nfc(text_pt).casefold(), th)
    if reasons:
        src_reasons, src_level = _repetition(words(text_en), _nfc(text_en).casefold(), th)
        if src_level >= 2 and level <= src_level + 1:
            reasons = []
    src, out = text_en.strip(), text_pt.strip()
    if len(src) >= th.min_source_chars:
        if len(out) / len(src) > th.max_length_ratio:
            reasons.append(f"length ratio {len(out) / len(src):.2f} > {th.max_length_ratio:g}")
    elif len(out) > th.max_length_ratio * max(len(src), th.short_source_chars):
        # Short sources have erratic ratios ('ok' -> 'está bem', 'tv' -> 'televisão'), but no short
        # source needs 2.5 times 20 characters: a longer output is a hallucinated continuation.
        reasons.append(f"{len(out)} chars for a {len(src)}-char source "
                       f"(> {th.max_length_ratio:g} x {max(len(src), th.short_source_chars)})")
    return f"{REPETITIVE}: " + "; ".join(reasons) if reasons else None


# --- low score ---------------------------------------------------------------------------------------

def detect_low_score(score: float | None, th: QualityThresholds = DEFAULT_THRESHOLDS) -> str | None:
    """Engine mean log-probability below `min_score` (engines without scores are never flagged)."""
    if score is None or th.min_score is None or score != score:  # NaN counts as no score
        return None
    if score < th.min_score:
        return f"{LOW_SCORE}: score {score:.2f} < {th.min_score:g}"
    return None


# --- per row and per table ---------------------------------------------------------------------------

def flag_details(text_en: str, text_pt: str | None, score: float | None = None,
                 thresholds: QualityThresholds | None = None, *,
                 only: Collection[str] | None = None) -> dict[str, str]:
    """Every flag raised for one row, mapped to its reason (insertion order = FLAG_NAMES order).

    `only` (optional) skips the detectors not named in it, as if they had found nothing; `flag_table`
    passes the detectors its pre-filter could not rule out.
    """
    th = thresholds or DEFAULT_THRESHOLDS
    empty = detect_empty(text_pt)
    if empty:  # nothing else is meaningful on an empty output
        return {EMPTY: empty}
    assert text_pt is not None

    def run(name: str, detect: Callable[[], str | None]) -> str | None:
        return detect() if only is None or name in only else None

    candidates = {
        UNTRANSLATED: run(UNTRANSLATED, lambda: detect_untranslated(text_en, text_pt, th)),
        BRAZILIAN: run(BRAZILIAN, lambda: detect_brazilian(text_pt, text_en)),
        TRUNCATED: run(TRUNCATED, lambda: detect_truncated(text_en, text_pt, th)),
        REPETITIVE: run(REPETITIVE, lambda: detect_repetitive(text_en, text_pt, th)),
        LOW_SCORE: run(LOW_SCORE, lambda: detect_low_score(score, th)),
    }
    if candidates[UNTRANSLATED]:
        # English text trips the PT heuristics (dangling 'a', 'time'); only the root cause is reported.
        candidates[BRAZILIAN] = candidates[TRUNCATED] = None
    return {k: v for k, v in candidates.items() if v}


def flag_row(text_en: str, text_pt: str | None, score: float | None = None,
             thresholds: QualityThresholds | None = None) -> list[str]:
    """The names of the flags raised for one row."""
    return list(flag_details(text_en, text_pt, score, thresholds))


def flag_table_reference(df: pl.DataFrame, thresholds: QualityThresholds | None = None, *,
                         text_en: str = "text_en", text_pt: str = "text_pt", score: str = "score") -> pl.DataFrame:
    """`flag_table` computed the plain way: `flag_details` on every distinct row (the behaviour the
    vectorised path must reproduce exactly; kept for tests and the benchmark)."""
    th = thresholds or DEFAULT_THRESHOLDS
    df, keys = _with_score(df, score), [text_en, text_pt, score]
    uniq = df.select(keys).unique()
    return _join_back(df, uniq, [flag_details(e or "", p, s, th) for e, p, s in uniq.iter_rows()], keys)


def _with_score(df: pl.DataFrame, score: str) -> pl.DataFrame:
    return df if score in df.columns else df.with_columns(pl.lit(None, dtype=pl.Float32).alias(score))


def _join_back(df: pl.DataFrame, uniq: pl.DataFrame, details: list[dict[str, str]], keys: list[str]) -> pl.DataFrame:
    uniq = uniq.with_columns(
        pl.Series("flags", [list(d) for d in details], dtype=pl.List(pl.String)),
        pl.Series("flag_reasons", [list(d.values()) for d in details], dtype=pl.List(pl.String)),
    )
    out = df.drop([c for c in ("flags", "flag_reasons") if c in df.columns])
    return out.join(uniq, on=keys, how="left", nulls_equal=True, maintain_order="left")


# --- the vectorised path -------------------------------------------------------------------------------------
#
# polars computes, for every distinct row, a cheap condition that is true whenever any detector could fire
# (a superset: lexicon and grammar regexes without their guards, any digit in the source, any token seen
# three times, ...).  Only those candidate rows run `flag_details`, the per-row reference, so the result is
# identical by construction; every other row is clean.  The superset argument needs Python's casefold, NFC,
# NFKC and \w to agree with polars' lowercase and (Rust) \w; they do on the characters below, and a row with
# any other character (combining marks, 'ß', 'º', '²', emoji, control characters) is a candidate whole.
_SAFE_CHARS = ("^[\t\n\r -~\u00a0\u00c0-\u00d6\u00d8-\u00de\u00e0-\u00f6\u00f8-\u00ff"
               "\u2013\u2014\u2018\u2019\u201c\u201d\u2026\u00ab\u00bb\u20ac]*$")
# Rows at or above this count of candidates run on a process pool (one worker per core).
PARALLEL_MIN_ROWS = 20_000
_SLICE_ROWS = 1_000_000


# \\w restricted to the safe characters, where it equals Python's \\w: the Unicode classes make the Rust engine's
# DFA blow up on a big alternation (350x slower on the brazilian superset pattern, measured).
_W_LATIN = "[0-9A-Za-z_\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff]"


def _latin(pattern: str) -> str:
    """`pattern` for polars on safe-character text: \\w and \\W as explicit Latin-1 classes."""
    return pattern.replace(r"\W", "[^" + _W_LATIN[1:]).replace(r"\w", _W_LATIN)


def _without_word_boundaries(pattern: str) -> str:
    """A pattern matching wherever `pattern` matches, without Unicode \\b (which makes the Rust regex engine
    fall back to its slowest matcher): a leading/trailing \\b next to a word character becomes a consumed
    non-word character or the text's edge, and any inner \\b is dropped (dropping only widens the match)."""
    head = pattern.startswith(r"\b")
    tail = pattern.endswith(r"\b") and not pattern.endswith(r"\\b")
    core = pattern[2 if head else 0:len(pattern) - 2 if tail else len(pattern)].replace(r"\b", "")
    return ("(?:^|\\W)" if head else "") + f"(?:{core})" + ("(?:\\W|$)" if tail else "")


def _brazilian_superset_pattern() -> str:
    parts = [mk.pattern for mk in BRAZILIAN_LEXICON]
    parts += [_PROGRESSIVE.pattern, _GERUND.pattern, _INITIAL_CLITIC.pattern, _BARE_POSSESSIVE.pattern,
              _AUX_PROCLISIS.pattern, _PT_EXISTENTIAL_TER.pattern,
              _SUBJECT_PROCLISIS.pattern.replace(r"(?!calhar\b)", "")]  # Rust regex has no look-ahead
    return "(?i)" + _latin("|".join(_without_word_boundaries(x) for x in parts))


def _looped_words(words6: pl.Series, th: QualityThresholds) -> list[str]:
    """The distinct words (runs of \\w, >= 6 chars) in which a piece loops `tandem_copies` times or more."""
    uniq = words6.explode().drop_nulls().unique()
    return [w for w in uniq.to_list() if (loop := _piece_loop(w)) and loop[1] >= th.tandem_copies]


# One bit per detector the pre-filter may leave to the per-row path; an unsafe row gets them all.
_BITS = {UNTRANSLATED: 1, BRAZILIAN: 2, TRUNCATED: 4, REPETITIVE: 8, LOW_SCORE: 16}
_ALL_BITS = sum(_BITS.values())
_ONLY = {b: frozenset(n for n, v in _BITS.items() if b & v) for b in range(_ALL_BITS + 1)}


def _candidate_bits(uniq: pl.DataFrame, th: QualityThresholds, en: str, pt: str, sc: str) -> pl.Series:
    """Per distinct row, the detectors that could fire on it (0 = certainly clean)."""
    e, p, s = pl.col(en).fill_null(""), pl.col(pt), pl.col(sc)
    p_low, e_low = p.str.to_lowercase(), e.str.to_lowercase()
    word = _latin(_WORD.pattern)
    non_word = "[^" + _W_LATIN[1:] + "+"
    frame = uniq.select(
        unsafe=(p.is_null() | ~p.str.contains(_SAFE_CHARS) | ~e.str.contains(_SAFE_CHARS)).fill_null(True),
        # normalise(a) == normalise(b) implies equal word characters once everything else is removed
        identical=p_low.str.replace_all(non_word, "") == e_low.str.replace_all(non_word, ""),
        hint=p_low.str.contains(_latin(_without_word_boundaries(r"\b(?:" + "|".join(sorted(_EN_HINTS)) + r")\b"))),
        brazilian=p.str.contains(_brazilian_superset_pattern()),
        # source numbers not all in the output verbatim (missing_source_numbers is [] when they all are)
        digits=e.str.extract_all(_NUMBER.pattern).list.set_difference(p.str.extract_all(_NUMBER.pattern))
        .list.len() > 0,
        src_len=e.str.strip_chars().str.len_chars(),
        out_len=p.str.strip_chars().str.len_chars(),
        low=((s < th.min_score) & s.is_not_nan()).fill_null(False) if th.min_score is not None else pl.lit(False),
        tp=p_low.str.extract_all(word),
        te=e_low.str.extract_all(word),
        words6=p_low.str.extract_all(_latin(r"\w{6,}")),
    )
    looped = _looped_words(frame["words6"], th)
    n = pl.col("tp").list.len()
    copied_upper = n - pl.col("tp").list.set_difference(pl.col("te")).list.len()
    short = pl.max_horizontal(pl.col("src_len"), pl.lit(th.short_source_chars))
    long_source = pl.col("src_len") >= th.min_source_chars
    # A loop of a 2-4-gram ('x y x y x y') and a 2-/3-gram seen ngram_max_repeats times both repeat their
    # leading 2-gram that often; a one-word loop is the same word `tandem_copies` times in a row.
    times = min(th.tandem_copies, th.ngram_max_repeats)
    el = pl.element()
    often = (pl.col("tp").list.eval(pl.concat_str([el, el.shift(-1)], separator=" ").drop_nulls()
                                    .unique_counts().max()).list.first().fill_null(0) >= times)
    same_run = pl.lit(True)
    for j in range(1, th.tandem_copies):
        same_run = same_run & (el == el.shift(j))
    one_word_loop = pl.col("tp").list.eval(same_run.fill_null(False).any()).list.first().fill_null(False)
    untranslated = pl.col("identical") | ((n >= th.langid_min_words) & (pl.col("hint") | (copied_upper * 3 >= n)))
    truncated = ((long_source & (pl.col("out_len") < (th.min_length_ratio + 0.01) * pl.col("src_len")))
                 | pl.col("digits") | ((n >= 3) & pl.col("tp").list.last().is_in(sorted(_DANGLING))))
    repetitive = (often | one_word_loop
                  | (pl.col("words6").list.eval(pl.element().is_in(looped)).list.any() if looped else pl.lit(False))
                  | (long_source & (pl.col("out_len") > (th.max_length_ratio - 0.01) * pl.col("src_len")))
                  | (~long_source & (pl.col("out_len") > th.max_length_ratio * short - 1)))

    def bit(cond: pl.Expr, name: str) -> pl.Expr:
        return pl.when(cond.fill_null(True)).then(_BITS[name]).otherwise(0)

    return frame.select(
        pl.when(pl.col("unsafe") | (pl.col("out_len") == 0)).then(_ALL_BITS).otherwise(
            bit(untranslated, UNTRANSLATED) + bit(pl.col("brazilian"), BRAZILIAN) + bit(truncated, TRUNCATED)
            + bit(repetitive, REPETITIVE) + bit(pl.col("low"), LOW_SCORE)
        ).alias("bits")
    ).to_series()


def _details_chunk(args: tuple[list[tuple], QualityThresholds]) -> list[dict[str, str]]:
    rows, th = args
    return [flag_details(e or "", p, s, th, only=_ONLY[b]) for e, p, s, b in rows]


def _details_parallel(rows: list[tuple], th: QualityThresholds, workers: int) -> list[dict[str, str]]:
    """`_details_chunk` over `rows`, on a pool of `workers` processes when there are many rows."""
    if workers <= 1 or len(rows) < PARALLEL_MIN_ROWS:
        return _details_chunk((rows, th))
    import multiprocessing as mp
    import warnings
    from concurrent.futures import ProcessPoolExecutor

    size = max(1000, len(rows) // (workers * 8))
    chunks = [(rows[i:i + size], th) for i in range(0, len(rows), size)]
    # fork: the children run only the pure-Python detectors and never call polars, so polars' fork warning
    # (its thread pool's locks are not safe to use in a forked child) does not apply to them.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fork.*", category=RuntimeWarning)
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
            return [d for part in pool.map(_details_chunk, chunks) for d in part]


def flag_table(df: pl.DataFrame, thresholds: QualityThresholds | None = None, *,
               text_en: str = "text_en", text_pt: str = "text_pt", score: str = "score",
               workers: int | None = None, timings: dict[str, float] | None = None) -> pl.DataFrame:
    """`df` plus `flags: list[str]` and `flag_reasons: list[str]` columns, row order kept.

    Identical to `flag_table_reference` (flag_details on every distinct (source, output, score) row), but
    only the rows a vectorised polars pre-filter marks as candidates run the per-row detectors, on
    `workers` processes (default: every core) when there are many; language ID thus runs only on
    candidates.  `timings`, when given, receives the seconds of each stage.
    """
    import os
    import time

    th = thresholds or DEFAULT_THRESHOLDS
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        if timings is not None:
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + now - clock
            clock = now

    df, keys = _with_score(df, score), [text_en, text_pt, score]
    uniq = df.select(keys).unique()
    lap("unique")
    cand_parts = []
    for start in range(0, uniq.height, _SLICE_ROWS):  # slices bound the memory of the token lists
        part = uniq.slice(start, _SLICE_ROWS)
        part = part.with_columns(_candidate_bits(part, th, text_en, text_pt, score).alias("_bits"))
        cand_parts.append(part.filter(pl.col("_bits") > 0))
    cand = pl.concat(cand_parts) if cand_parts else uniq.with_columns(pl.lit(0).alias("_bits")).clear()
    lap("prefilter")
    details = _details_parallel(list(cand.iter_rows()), th, workers or os.cpu_count() or 1)
    cand = cand.drop("_bits")
    lap(f"detectors on {cand.height:,} candidates")
    flagged = [(i, d) for i, d in enumerate(details) if d]
    hit = cand[[i for i, _ in flagged]].with_columns(
        pl.Series("flags", [list(d) for _, d in flagged], dtype=pl.List(pl.String)),
        pl.Series("flag_reasons", [list(d.values()) for _, d in flagged], dtype=pl.List(pl.String)),
    )
    out = df.drop([c for c in ("flags", "flag_reasons") if c in df.columns])
    # Join only the key columns and add the two flag columns: joining `out` itself would copy every column
    # (3.3M rows: ~1.4 GB more peak RSS).  `hit` holds each key once, so the rows stay one to one.
    found = out.select(keys).join(hit, on=keys, how="left", nulls_equal=True, maintain_order="left")
    out = out.hstack(found.select(
        pl.col("flags").fill_null(pl.lit([], dtype=pl.List(pl.String))),
        pl.col("flag_reasons").fill_null(pl.lit([], dtype=pl.List(pl.String))),
    ))
    lap("join")
    return out


def flag_rates(df: pl.DataFrame, *, engine: str = "engine") -> pl.DataFrame:
    """Per engine: `rows`, one rate column per flag (fraction of rows) and `any_flag`; needs a `flags` column."""
    if "flags" not in df.columns:
        raise ValueError("flag_rates needs a 'flags' column: run flag_table first")
    return (
        df.group_by(engine)
        .agg(
            pl.len().alias("rows"),
            *[pl.col("flags").list.contains(f).mean().alias(f) for f in FLAG_NAMES],
            (pl.col("flags").list.len() > 0).mean().alias("any_flag"),
        )
        .sort(engine)
    )
