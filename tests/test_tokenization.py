"""The offline byte-level BPE tokenizer of the tiny backbone."""

from transformers import AutoTokenizer

from clipzoo.processing.tokenization_offline import build_offline_tokenizer


CORPUS = ["a red triangle", "two blue circles", "a small green square to the left of a large red star"] * 20


def test_wraps_texts_and_never_emits_unknown_tokens():
    tok = build_offline_tokenizer(CORPUS, vocab_size=300)
    ids = tok("Ankle boots, unseen words!")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "ankle boots, unseen words!"


def test_eos_id_is_not_the_legacy_openai_two():
    tok = build_offline_tokenizer(CORPUS, vocab_size=300)
    # CLIPTextTransformer pools at argmax(input_ids) when eos_token_id == 2; ours must take the eos path.
    assert tok.eos_token_id != 2 and tok.pad_token_id != tok.eos_token_id


def test_deterministic_and_round_trips(tmp_path):
    a, b = build_offline_tokenizer(CORPUS, 300), build_offline_tokenizer(CORPUS, 300)
    assert a.get_vocab() == b.get_vocab()
    a.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("a red star")["input_ids"] == a("a red star")["input_ids"]


def test_too_small_vocab_is_rejected():
    import pytest

    with pytest.raises(ValueError, match="vocab_size must be >= 260"):
        build_offline_tokenizer(CORPUS, vocab_size=100)
