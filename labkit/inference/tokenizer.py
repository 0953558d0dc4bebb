"""The tokenizer of the course's language models (the Rust ``tokenizers`` library, no
Transformers) and the incremental detokenizer that streams text token by token."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

class Tokenizer:
    """A thin wrapper over a ``tokenizers.Tokenizer`` (the Rust library, no Transformers).

    Attributes:
        eos_id: the id that ends a generation (or None if the model has none).
        pad_id: the id used to left-pad a batch (its positions are masked out).
    """

    def __init__(self, path: str | Path, eos_token: str | None, pad_token: str | None = None):
        from tokenizers import Tokenizer as _RustTokenizer

        self.path = Path(path)
        self._tok = _RustTokenizer.from_file(str(path))
        self.eos_id = self._tok.token_to_id(eos_token) if eos_token else None
        pad = self._tok.token_to_id(pad_token) if pad_token else None
        self.pad_id = pad if pad is not None else (self.eos_id if self.eos_id is not None else 0)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens are added)."""
        if not isinstance(text, str):
            raise ValueError(f"encode: expected a str, got {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def tokens(self, text: str) -> list[str]:
        """The token strings of ``text`` (for showing how text is split)."""
        return self._tok.encode(text, add_special_tokens=False).tokens


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text pieces. Byte-level tokens can split a
    UTF-8 character, so a piece is held back while the text ends in an incomplete one."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = 0

    def push(self, token_id: int) -> str:
        """Add one token id; return the new text it completes (may be empty)."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        piece, self.emitted = text[self.emitted:], len(text)
        return piece
