"""A character-level tokenizer built locally, for tiny random models on synthetic tasks (no hub access).

Every printable ASCII character is one token; ``\\boxed{`` is one token as well, so a tiny model only
has to learn one symbol to mark its answer.
"""

from __future__ import annotations

import string

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
BOXED = "\\boxed{"
# Renders a conversation as its plain text and prompts the answer with "=" (the synthetic tasks are
# equations); no role markers, so a prompt costs only its own characters.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}={% endif %}"
)


def build_char_tokenizer(extra_chars: str = ""):
    """A ``PreTrainedTokenizerFast`` over printable ASCII plus ``extra_chars``.

    Ids: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``\\boxed{`` 3, then one id per character. The tokenizer
    carries a chat template, so prompts go through ``apply_chat_template`` like any chat model's.
    """
    try:
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast
    except ImportError as e:  # pragma: no cover - transformers is a core dependency
        raise ImportError("the char tokenizer needs `tokenizers` and `transformers`") from e
    chars = sorted(set(string.printable.replace("\x0b", "").replace("\x0c", "")) | set(extra_chars))
    vocab = {token: i for i, token in enumerate([PAD, BOS, EOS, BOXED, *chars])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=" "))
    # \boxed{ first so it wins over its characters; then any single character.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"\\boxed\{|[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, clean_up_tokenization_spaces=False
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
