"""The shape of the course's decoder: :class:`DecoderConfig` (also read from a Hugging Face
Llama ``config.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DecoderConfig:
    """Shape of a :class:`~labkit.inference.decoder.Decoder`.

    Attributes:
        vocab_size: number of token ids.
        d_model: width of the residual stream.
        n_layers: number of transformer blocks.
        n_heads: query heads per block.
        n_kv_heads: key/value heads per block (fewer than ``n_heads``: grouped-query attention).
        d_ff: hidden width of the SwiGLU MLP.
        max_seq_len: the context: the most tokens (prompt + generated) one sequence may hold.
        rope_theta: base of the rotary position embedding's frequencies.
        norm_eps: epsilon of RMSNorm.
        tie_embeddings: whether the language-model head reuses the embedding matrix.
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    max_seq_len: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff",
                     "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DecoderConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"DecoderConfig: d_model ({self.d_model}) must be a multiple of "
                             f"n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"DecoderConfig: n_heads ({self.n_heads}) must be a multiple of "
                             f"n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"DecoderConfig: head_dim ({self.head_dim}) must be even for RoPE")

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``d_model // n_heads``."""
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        """The config as a plain dict (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DecoderConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"DecoderConfig: unknown keys {sorted(unknown)}; "
                             f"allowed: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_hf_llama(cls, hf: dict, max_seq_len: int | None = None) -> DecoderConfig:
        """Map a Hugging Face ``LlamaConfig`` dict (``config.json``) to a DecoderConfig."""
        rope = hf.get("rope_parameters") or {}
        theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
        if rope.get("rope_type", "default") != "default" or hf.get("rope_scaling"):
            raise ValueError("DecoderConfig.from_hf_llama: only the default RoPE is implemented; "
                             f"got {rope or hf.get('rope_scaling')}")
        n_heads = int(hf["num_attention_heads"])
        d_model = int(hf["hidden_size"])
        if int(hf.get("head_dim") or d_model // n_heads) != d_model // n_heads:
            raise ValueError("DecoderConfig.from_hf_llama: head_dim must equal "
                             "hidden_size / num_attention_heads")
        return cls(vocab_size=int(hf["vocab_size"]), d_model=d_model,
                   n_layers=int(hf["num_hidden_layers"]), n_heads=n_heads,
                   n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
                   d_ff=int(hf["intermediate_size"]),
                   max_seq_len=int(max_seq_len or hf["max_position_embeddings"]),
                   rope_theta=float(theta), norm_eps=float(hf["rms_norm_eps"]),
                   tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
