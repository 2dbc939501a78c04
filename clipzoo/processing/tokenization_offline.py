"""A byte-level BPE tokenizer trained offline from a text corpus.

No CLIP tokenizer can be downloaded here, so the tiny backbone trains its own. Byte-level BPE never produces an unknown
token: words absent from the training corpus (held-out class names, user prompts) still tokenize, into smaller pieces.
Special-token ids are chosen so that `eos_token_id != 2`: transformers' `CLIPTextTransformer` treats `eos_token_id == 2`
as the legacy OpenAI layout and pools at `input_ids.argmax(-1)`, which is only right for the OpenAI vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast


__all__ = ["BOS_TOKEN", "EOS_TOKEN", "PAD_TOKEN", "build_offline_tokenizer"]

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"


def build_offline_tokenizer(
    corpus: Iterable[str], vocab_size: int = 1024, model_max_length: int = 32
) -> PreTrainedTokenizerFast:
    """Trains a lower-cased byte-level BPE tokenizer on `corpus`.

    Args:
        corpus (`Iterable[str]`): training texts (captions, class names, prompt templates).
        vocab_size (`int`, *optional*, defaults to 1024): upper bound on the vocabulary, special tokens included.
        model_max_length (`int`, *optional*, defaults to 32): the text tower's context length.

    Returns:
        `PreTrainedTokenizerFast`: ids `0 = <|startoftext|>`, `1 = <|endoftext|>`, `2 = <pad>`; every encoded text is
        wrapped as `<|startoftext|> ... <|endoftext|>`.

    Examples:

    ```python
    >>> from clipzoo.processing.tokenization_offline import build_offline_tokenizer
    >>> tok = build_offline_tokenizer(["a red triangle", "two blue circles"], vocab_size=300)
    >>> tok("a red circle")["input_ids"][0] == tok.bos_token_id
    True
    ```
    """
    if vocab_size < 260:
        raise ValueError(f"vocab_size must be >= 260 (256 bytes + special tokens), got {vocab_size}.")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS_TOKEN, EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer)
    bos, eos = tokenizer.token_to_id(BOS_TOKEN), tokenizer.token_to_id(EOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}", special_tokens=[(BOS_TOKEN, bos), (EOS_TOKEN, eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
    )
