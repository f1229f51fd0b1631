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
                   named: dict[str, str] | None = None, ids: dict[str, int] | None = None, eos_token: str = "</s>",
                   add_bos: bool = True):
    """Return a ``PreTrainedTokenizerFast`` over ``specials + words`` (lower-casing input).

    Ids: ``<pad>``=0, ``<unk>``=1, ``<s>``=2 (BOS, prepended unless ``add_bos=False``), ``</s>``=3, ``<image>``=4.
    ``named``: the tokenizer's named special tokens (default ``{"image_token": "<image>"}``; Qwen
    processors read ``image_token``, ``video_token``...). ``ids``: tokens pinned to given ids (a
    published checkpoint's, e.g. Qwen's ``<|image_pad|>`` = 151655); the others fill the free ids.
    ``eos_token``: one of ``specials``.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = list(specials or SPECIALS)
    pinned = dict(ids or {})
    used = set(pinned.values())
    vocab: dict[str, int] = dict(pinned)
    nxt = 0
    for w in specials + [w.lower() for w in (words or BASE_WORDS)]:
        if w in vocab:
            continue
        while nxt in used:
            nxt += 1
        vocab[w] = nxt
        used.add(nxt)
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("<image>", behavior="isolated"), pre_tokenizers.Whitespace()]
    )
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])])
    tok.add_special_tokens(specials + [t for t in pinned if t not in specials])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token=eos_token,
        padding_side=padding_side,
        extra_special_tokens=dict(named) if named is not None else {"image_token": "<image>"},
    )
    return fast
