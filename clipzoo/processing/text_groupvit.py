"""GroupViT's multi-label prompt expansion: word extraction, the CLIP ImageNet templates, prompt sampling.

The official `WordAugTokenizeWrapper` (NVlabs/GroupViT `datasets/builder.py`) tags the caption with NLTK
(`word_tokenize` + `pos_tag`), keeps the words tagged `NN, NNS, NNP` and the verb tags `VB, VBD, VBG, VBN, VBP, VBZ`,
picks `min(K, #words)` of them uniformly without replacement, puts each in one random template of the 80 CLIP
ImageNet templates, and fills the remaining slots with the raw caption. The text becomes `[caption, p_1, ..., p_K]`.

NLTK's tagger needs data downloaded at run time (`nltk.download('popular')`), which is impossible offline, so the
default extractor here is `LexiconWordExtractor`: a closed-class word list (determiners, pronouns, prepositions,
conjunctions, numerals, adverbs) plus a lexicon of adjectives and adjective suffixes. Everything else counts as a
noun or verb. Differences from NLTK: no context (NLTK may tag "left" as a verb or an adjective by position, we use
the lexicon), unknown adjectives without a listed suffix are kept as nouns, and proper-noun detection is by
exclusion only. On the small ShapesWorld vocabulary it keeps the shape nouns and the verbs ("pointing"), and drops
colours, sizes and function words, as NLTK does. `clipzoo.training.groupvit.NLTKWordExtractor` reproduces the
official tagger where NLTK and its tagger data are installed. Both are plain callables `str -> list[str]`; any
such callable can be passed.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence

import numpy as np


__all__ = [
    "FULL_IMAGENET_TEMPLATES",
    "LexiconWordExtractor",
    "SIMPLE_TEMPLATES",
    "SUBSET_IMAGENET_TEMPLATES",
    "build_prompt_texts",
    "prompt_key",
]

# The 80 prompt templates of CLIP's ImageNet zero-shot evaluation (OpenAI, MIT licence), in the official order.
FULL_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)  # fmt: skip

# The 7-template subset the official zero-shot classification uses, and the single segmentation template.
SUBSET_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.", "a bad photo of a {}.", "a origami {}.", "a photo of the large {}.", "a {} in a video game.",
    "art of the {}.", "a photo of the small {}.",
)  # fmt: skip
SIMPLE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)

# Penn-Treebank closed classes that NLTK never tags NN*/VB*: DT, PDT, WDT, PRP, PRP$, WP, IN, TO, CC, CD, RB, RP, MD,
# EX, UH. (Forms of "be"/"have"/"do" are tagged VB* by NLTK, so the official extractor keeps them; so do we.)
_CLOSED_CLASS = frozenset(
    """a an the this that these those some any each every either neither no all both half such what which whose
    whatever whichever i me my mine we us our ours you your yours he him his she her hers it its they them their
    theirs myself yourself himself herself itself ourselves themselves who whom someone something anyone anything
    nobody nothing everyone everything there here of in on at by for with about against between into through during
    before after above below to from up down out off over under again further then once onto upon within without
    along across behind beside besides near beneath toward towards among around inside outside via per than like
    and or but nor so yet if because while although though unless whereas whether as
    one two three four five six seven eight nine ten eleven twelve zero first second third fourth fifth
    very too also not only just quite rather almost always never often sometimes still even ever already
    together apart away back forward where when why how can could may might must shall should will would
    oh yes please""".split()
)
# Adjectives (JJ/JJR/JJS) common in captions; NLTK drops them.
_ADJECTIVES = frozenset(
    """red green blue yellow purple orange white black gray grey pink brown cyan magenta violet golden silver beige
    crimson scarlet turquoise teal maroon
    dark light bright pale small large big tiny huge little long short tall wide narrow thin thick round
    flat old new young good bad nice beautiful pretty ugly clean dirty empty full open closed hot cold warm cool
    wet dry high low heavy soft hard smooth rough fast slow happy sad other same different many few several more
    most less least much top bottom middle central upper lower inner outer solid striped dotted plain single
    double multiple left right leftmost rightmost topmost upward downward sideways vertical horizontal diagonal
    colorful colourful wooden metal plastic next""".split()
)
_ADJECTIVE_SUFFIXES = ("ous", "ful", "less", "ish", "ive", "able", "ible", "est")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


class LexiconWordExtractor:
    """Offline stand-in for the official NLTK noun+verb extractor (see the module docstring for the differences).

    Args:
        extra_stopwords (`Sequence[str]`, *optional*): more words to drop.
        extra_adjectives (`Sequence[str]`, *optional*): more adjectives to drop.

    Examples:

    ```python
    >>> from clipzoo.processing.text_groupvit import LexiconWordExtractor
    >>> LexiconWordExtractor()("a small red triangle pointing up next to two blue circles")
    ['triangle', 'pointing', 'circles']
    ```
    """

    def __init__(self, extra_stopwords: Sequence[str] = (), extra_adjectives: Sequence[str] = ()):
        self.stopwords = _CLOSED_CLASS | {w.lower() for w in extra_stopwords}
        self.adjectives = _ADJECTIVES | {w.lower() for w in extra_adjectives}

    def is_adjective(self, word: str) -> bool:
        lower = word.lower()
        return lower in self.adjectives or (len(lower) > 5 and lower.endswith(_ADJECTIVE_SUFFIXES))

    def __call__(self, text: str) -> list[str]:
        words = []
        for token in _WORD.findall(text):
            lower = token.lower()
            if lower in self.stopwords or self.is_adjective(token):
                continue
            words.append(token)
        return words


def build_prompt_texts(
    caption: str,
    num_prompts: int = 3,
    word_extractor: Callable[[str], list[str]] | None = None,
    templates: Sequence[str] = FULL_IMAGENET_TEMPLATES,
    rng: np.random.Generator | None = None,
    no_word_policy: str = "fill",
    return_words: bool = False,
) -> list[str] | tuple[list[str], list[str]]:
    """Returns `[caption, p_1, ..., p_K]` as the official `WordAugTokenizeWrapper.__call__` builds them.

    Args:
        caption (`str`): the raw caption.
        num_prompts (`int`, *optional*, defaults to 3): K.
        word_extractor (`Callable[[str], list[str]]`, *optional*): defaults to `LexiconWordExtractor()`.
        templates (`Sequence[str]`, *optional*): defaults to the 80 CLIP ImageNet templates.
        rng (`np.random.Generator`, *optional*): the random source (the official code uses numpy's global one).
        no_word_policy (`str`, *optional*, defaults to `"fill"`): when the extractor finds no word, `"fill"` uses the
            caption for every prompt (the official behaviour), `"error"` raises a `ValueError`.
        return_words (`bool`, *optional*, defaults to `False`): also return what each prompt names: its word, or the
            caption for a prompt filled with the caption. The random draws are the same either way.

    Returns:
        `list[str]` of length `1 + num_prompts`; with `return_words=True`, a tuple of it and the `num_prompts` words.
    """
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"Caption must be a non-empty string, got {caption!r}.")
    if num_prompts < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}.")
    if no_word_policy not in ("fill", "error"):
        raise ValueError(f"no_word_policy must be 'fill' or 'error', got {no_word_policy!r}.")
    rng = rng if rng is not None else np.random.default_rng()
    words = (word_extractor or _DEFAULT_EXTRACTOR)(caption)
    if not words and no_word_policy == "error":
        raise ValueError(
            f"Caption {caption!r} has no nouns or verbs for the multi-label prompts; fix the caption, pass a "
            "different word_extractor, or use no_word_policy='fill' (the official behaviour: prompts = caption)."
        )
    prompts, named = [], []
    if words:
        # Positions, not words, are sampled without replacement, so a repeated word can be picked twice (official).
        chosen = rng.choice(len(words), size=min(num_prompts, len(words)), replace=False)
        named = [words[int(i)] for i in chosen]
        prompts = [templates[int(rng.integers(len(templates)))].format(word) for word in named]
    prompts += [caption] * (num_prompts - len(prompts))
    named += [caption] * (num_prompts - len(named))
    return ([caption, *prompts], named) if return_words else [caption, *prompts]


def prompt_key(word: str) -> int:
    """A stable integer id for what a prompt names (CRC-32 of the UTF-8 text), equal on every process and run.

    `ClipzooGroupViTModel` with `multi_label_targets="word"` treats prompts with equal ids as the same label.
    """
    return zlib.crc32(word.encode("utf-8"))


_DEFAULT_EXTRACTOR = LexiconWordExtractor()
