"""The tiny models' tokenizers, built without any download (a byte-level BPE, or one trained offline by
scripts/train_tiny.py), and the ``<image>`` placeholder every prompt carries."""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

IMAGE_TOKEN = "<image>"


BYTE_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def build_byte_tokenizer(bos: bool = True, extra_specials: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens + specials) built without any download.

    ``bos``: prepend ``<s>`` to every encoding (Llama does; Qwen2 does not). ``extra_specials``:
    more special tokens (e.g. Qwen's chat markers), each one id.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(BYTE_SPECIALS + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return byte_level_tokenizer(backend, bos, extra_specials)


def byte_level_tokenizer(backend, bos: bool = True, extra_specials: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """``backend`` (a `tokenizers.Tokenizer` whose vocabulary starts with ``BYTE_SPECIALS``) as the tiny
    models' tokenizer: byte-level decoding, ``<s>`` first when ``bos``, ``<image>`` and ``extra_specials``."""
    from tokenizers import decoders, processors

    backend.decoder = decoders.ByteLevel()
    if bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", backend.token_to_id("<s>"))]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, *extra_specials]})
    return tokenizer


QWEN_CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")


def qwen_chat_tokenizer(backend=None) -> PreTrainedTokenizerFast:
    """The tiny LLaVA-Video's tokenizer: ``backend`` (a `tokenizers.Tokenizer` whose vocabulary starts with
    ``BYTE_SPECIALS``; default the byte-level one) with Qwen's chat markers and no BOS (as Qwen2);
    ``<|im_end|>`` is EOS."""
    if backend is None:
        tokenizer = build_byte_tokenizer(bos=False, extra_specials=QWEN_CHAT_TOKENS)
    else:
        tokenizer = byte_level_tokenizer(backend, bos=False, extra_specials=QWEN_CHAT_TOKENS)
    tokenizer.eos_token = "<|im_end|>"
    return tokenizer
