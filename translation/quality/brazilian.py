"""The `brazilian` flag: PT-BR lexicon, spellings and grammar in the output.

Grammar: the progressive gerund ('está fazendo'), article-less possessives ('em sua casa'), sentence-initial
and subject proclisis ('se vê', 'o sol se põe'), auxiliary proclisis ('vou te ligar') and 'ter' for 'there
is'.  Only markers that are NOT also PT-PT are listed; the reason names each match with its PT-PT
counterpart so a reader sees why, e.g. "brazilian: ônibus (PT-PT autocarro); está fazendo (PT-PT estar a +
infinitive)".
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from translation.quality.base import Columns, Flag, Row, latin, without_word_boundaries
from translation.quality.text import nfc
from translation.quality.thresholds import QualityThresholds

BRAZILIAN = "brazilian"

@dataclass(frozen=True)
class Marker:
    """A PT-BR marker: a regex (case-insensitive, Unicode word boundaries), the PT-PT form, an optional guard.

    guard(text, match) -> bool: extra context check, e.g. 'time' only in a team sense.
    unless_en: a regex (case-insensitive) on the English source; when it matches, the marker is a PT-PT
        word in that sense ('cachorros' for 'puppies') and does not count.
    """

    pattern: str
    ptpt: str
    guard: Callable[[str, re.Match[str]], bool] | None = None
    unless_en: str | None = None


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


# Nouns that 'pedestre' qualifies as an adjective in PT-PT ('percurso pedestre', a hiking trail); as a noun
# ('os pedestres', 'faixa de pedestres') it is PT-BR for 'peão'.
_PEDESTRIAN_ADJ_AFTER = frozenset({"percurso", "percursos", "trilho", "trilhos", "caminho", "caminhos", "rota",
                                   "rotas", "circuito", "circuitos", "passeio", "passeios", "zona", "zonas",
                                   "travessia", "travessias", "ponte", "pontes"})


def _pedestrian_noun(text: str, m: re.Match[str]) -> bool:
    return _prev_word(text, m) not in _PEDESTRIAN_ADJ_AFTER


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
    # PT-PT 'cachorro' is a puppy or cub; only for a grown dog is it PT-BR.
    Marker(_w("cachorr[oa]s?", "cachorrinh[oa]s?"), "cão", unless_en=r"\b(?:pupp(?:y|ies)|cubs?|whelps?|litter)\b"),
    Marker(_w("gol", "gols"), "golo"),
    Marker(_w("camisetas?"), "t-shirt / camisola"),
    Marker(_w("suéter", "suéteres"), "camisola"),
    Marker(_w("recepç\\w+", "recepcionistas?"), "receção / rececionista"),
    Marker(_w("xícaras?"), "chávena"),
    Marker(_w("abacaxis?"), "ananás"),
    Marker(_w("mamão", "mamões"), "papaia"),
    Marker(_w("metrô"), "metro"),
    Marker(_w("bondes?"), "elétrico"),
    Marker(_w("pedestres?"), "peão / passadeira", _pedestrian_noun),
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
# After a subject 'eu' or a negation the -ndo word is a first-person present, not a gerund: 'eu vendo
# carros' (I sell), 'não entendo' (I do not understand), 'eu aprendo'.
_GERUND_OK_BEFORE = frozenset({"vai", "vão", "ia", "iam", "ir", "vou", "vamos", "foi", "foram", "tendo", "sendo",
                               "estando", "havendo", "como", "em", "que", "eu", "não", "nunca", "também", "ainda",
                               "já"})
_INITIAL_CLITIC = re.compile(
    r"^\W*(?:(?:me|te|lhe|lhes)\s+\w+|se\s+(?:vê|veem|vêem|pode|podem|encontra|encontram|trata|nota|observa|"
    r"vêm|mostra))\b",
    re.IGNORECASE,
)
# A subject noun phrase then a proclitic 'se' ('o sol se põe'): PT-PT puts it after the verb ('põe-se').
# 'se calhar' (PT-PT 'perhaps') is the exception.
_SUBJECT_PROCLISIS = re.compile(r"^\W*(?:o|a|os|as|um|uma)\s+(\w+)\s+(?:se|me|lhe)\s+(?!calhar\b)\w+", re.IGNORECASE)
# Words that attract the clitic before the verb in PT-PT too: a relative/interrogative ('o que se vê', 'a
# qual se refere') and 'o mesmo' ('o mesmo se aplica').  After them the proclisis is not PT-BR.
_PROCLISIS_ATTRACTORS = frozenset({"que", "quem", "qual", "quais", "mesmo", "mesma", "mesmos", "mesmas"})
_BARE_POSSESSIVE = re.compile(r"\b(?:em|de|com|para)\s+(?:seu|sua|seus|suas)\b", re.IGNORECASE)
# Fixed phrases PT-PT writes without the article: 'de sua autoria', 'de sua livre vontade', 'de seu nome'.
_FIXED_POSSESSIVE_NEXT = re.compile(r"\s+(?:própri[oa]\s+)?(?:autoria|livre|nome|honra|memória|iniciativa)\b",
                                    re.IGNORECASE)


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
    subject = _SUBJECT_PROCLISIS.search(text)
    if subject and subject.group(1).casefold() in _PROCLISIS_ATTRACTORS:
        subject = None
    m = _INITIAL_CLITIC.search(text) or subject
    if m:
        found.append(f"{m.group(0).strip()} (PT-PT enclisis, e.g. vê-se)")
    for m in _BARE_POSSESSIVE.finditer(text):
        if not _FIXED_POSSESSIVE_NEXT.match(text, m.end()):
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
    text = nfc(text_pt)
    found = []
    # One combined scan first: most rows match no marker, and one pass beats ~70 separate searches.
    for pattern, ptpt, guard, unless_en in _COMPILED_LEXICON if _ANY_LEXICON.search(text) else ():
        if unless_en is not None and unless_en.search(text_en):
            continue
        for m in pattern.finditer(text):
            if _lexicon_guard(text, m) and (guard is None or guard(text, m)):
                found.append(f"{m.group(0)} (PT-PT {ptpt})")
    for m in _AUX_PROCLISIS.finditer(text):
        found.append(f"{m.group(0)} (PT-PT enclisis, e.g. vou ligar-te)")
    if text_en and _EN_EXISTENTIAL.search(text_en) and not _PT_HAVER.search(text):
        m = _PT_EXISTENTIAL_TER.search(text)
        if m:
            found.append(f"{m.group(0)} for 'there is' (PT-PT há)")
    return found + _grammar_markers(text)


_COMPILED_LEXICON = [(re.compile(mk.pattern, re.IGNORECASE), mk.ptpt, mk.guard,
                      re.compile(mk.unless_en, re.IGNORECASE) if mk.unless_en else None) for mk in BRAZILIAN_LEXICON]
_ANY_LEXICON = re.compile("|".join(f"(?:{mk.pattern})" for mk in BRAZILIAN_LEXICON), re.IGNORECASE)


def detect_brazilian(text_pt: str, text_en: str = "") -> str | None:
    """PT-BR lexicon, spelling or grammar; the reason lists every marker with its PT-PT form."""
    found = brazilian_markers(text_pt, text_en)
    return f"{BRAZILIAN}: " + "; ".join(dict.fromkeys(found)) if found else None



def _detect(row: Row, th: QualityThresholds) -> str | None:
    return detect_brazilian(row.text_pt, row.text_en)


def _superset_pattern() -> str:
    """Every lexicon and grammar pattern without its guard or context, in one polars regex."""
    parts = [mk.pattern for mk in BRAZILIAN_LEXICON]
    parts += [_PROGRESSIVE.pattern, _GERUND.pattern, _INITIAL_CLITIC.pattern, _BARE_POSSESSIVE.pattern,
              _AUX_PROCLISIS.pattern, _PT_EXISTENTIAL_TER.pattern,
              _SUBJECT_PROCLISIS.pattern.replace(r"(?!calhar\b)", "")]  # Rust regex has no look-ahead
    return "(?i)" + latin("|".join(without_word_boundaries(x) for x in parts))


_SUPERSET = _superset_pattern()


def _candidates(c: Columns, th: QualityThresholds) -> pl.Expr:
    return c.pt.str.contains(_SUPERSET)


FLAG = Flag(BRAZILIAN, _detect, _candidates, doc="PT-BR lexicon, spelling or grammar", colour="#1e8449")
