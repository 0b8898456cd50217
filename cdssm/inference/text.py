"""Printing generated tokens as text while they stream."""


def token_text(token: int, encoding, text) -> str:
    """What to print for ``token``: its text (through the incremental UTF-8 decoder ``text``, so
    a character split over tokens prints whole), or the raw id without a tokenizer or when the
    model's vocabulary is larger than the tokenizer's."""
    if encoding is None or token >= encoding.n_vocab:
        return f"{token} " if encoding is None else f"<{token}>"
    return text.decode(encoding.decode_single_token_bytes(token))
