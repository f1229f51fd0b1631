"""A word-level tokenizer built offline (no vocab download), as a transformers fast tokenizer.

Used by tiny test models and the organisms: words and punctuation each get one id, so a
colour or shape word is exactly one token. Saved and loaded with the model like any HF
tokenizer (``save_pretrained`` / ``AutoTokenizer.from_pretrained(local_dir)``).
"""
from __future__ import annotations

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]

BASE_WORDS = (
    "a an and the is there are what color colour how many of in image shows with describe "
    "yes no zero one two three four "
    "red green blue yellow purple orange circle square triangle cross circles squares triangles crosses "
    "user assistant USER ASSISTANT : ? . , left right top bottom"
).split()


def word_tokenizer(words: list[str] | None = None, specials: list[str] | None = None, padding_side: str = "left",
                   eos_token: str = "</s>", add_bos: bool = True, named: dict[str, str] | None = None):
    """Return a ``PreTrainedTokenizerFast`` over ``specials + words`` (lower-casing input).

    Ids: ``<pad>``=0, ``<unk>``=1, ``<s>``=2 (BOS, prepended unless ``add_bos=False``), ``</s>``=3, ``<image>``=4.
    ``eos_token``: one of ``specials``; ``named``: the tokenizer's named special tokens
    (``extra_special_tokens``, default ``{"image_token": "<image>"}``), e.g. Qwen's ``image_token``.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = list(specials or SPECIALS)
    vocab: dict[str, int] = {}
    for w in specials + [w.lower() for w in (words or BASE_WORDS)]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("<image>", behavior="isolated"), pre_tokenizers.Whitespace()]
    )
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])])
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token=eos_token,
        padding_side=padding_side,
        extra_special_tokens=named or {"image_token": "<image>"},
    )
    return fast
