"""The local character tokenizer: one token per character, \\boxed{ as one token, round trips."""

from vortex_rl.data import build_char_tokenizer


def test_round_trip_and_special_tokens(tmp_path):
    tok = build_char_tokenizer()
    text = "12+7=\\boxed{19} and 3/4 \\frac{1}{2}"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text
    assert tok.convert_ids_to_tokens(ids[:6]) == ["1", "2", "+", "7", "=", "\\boxed{"]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == text
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text, add_special_tokens=False).input_ids == ids and loaded.chat_template == tok.chat_template
