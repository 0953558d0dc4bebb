"""Inference: the course's language models, how they decode, and lower precision.

==================  ==========================================================================
module              holds
==================  ==========================================================================
``config``          ``DecoderConfig``: the shape of a decoder
``kv_cache``        ``KVCache`` (static, one batch) and ``SlotCache`` (continuous batching)
``decoder``         ``Decoder``: the Llama-style transformer in plain PyTorch, its decode steps
``tokenizer``       ``Tokenizer`` and the incremental detokenizer
``generation``      ``Generation``, ``GenerationTimings``, ``pick_token``
``language_model``  ``LanguageModel`` (generate, stream), ``load_tiny_gpt``
``smollm2``         SmolLM2-135M-Instruct: GGUF conversion (``prepare_smollm2``) and loading
``loading``         ``load_model`` by name
``decode_bench``    ``decode_benchmark`` against the bandwidth roofline, ``bench decode`` CLI
``quant``           int8/int4 kernels and ``quantize_model``
``quant_quality``   bytes, perplexity and top-1 agreement of a quantized model
``quant_bench``     ``measure_precisions``, ONNX Runtime rows, ``bench quant`` CLI
``backends``        ONNX export and ONNX Runtime sessions
``zoo``             small randomly initialised CNN, U-Net and transformer models
==================  ==========================================================================

May import :mod:`labkit.machine` and :mod:`labkit.planning`.
"""
