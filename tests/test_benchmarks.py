"""The benchmark scripts' own arithmetic, where a wrong constant would go unnoticed in their figures."""

import importlib.util
from pathlib import Path

import torch


def load_benchmark(name: str):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_mfu_flops_agree_with_torch_flop_counter():
    """gpu_mfu's MFU numerator, 6 x parameters per token (the tied embedding once, as the head) plus
    12 x layers x attention width x keys attended, against torch's FlopCounterMode over one forward and
    backward of its model. Eager attention computes the full T x T scores (the mask only hides half), so the
    counter sees T^2 keys per example where the formula credits the causal T(T+1)/2; and the norms' weights
    and the q/k/v biases are parameters without a matrix product (0.2 % of the tiny model's)."""
    from torch.utils.flop_counter import FlopCounterMode

    gpu_mfu = load_benchmark("gpu_mfu")
    tokens = 96
    model, config = gpu_mfu.build_model("tiny", tokens, "eager", "cpu")
    ids = torch.randint(0, config.vocab_size, (1, tokens))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    params = sum(p.numel() for p in model.parameters())
    no_product = sum(p.numel() for name, p in model.named_parameters() if "norm" in name or "bias" in name)
    width = config.num_attention_heads * (config.hidden_size // config.num_attention_heads)
    real, keys = gpu_mfu.work([tokens])
    assert (real, keys) == (tokens, tokens * (tokens + 1) // 2)
    attention = 12 * config.num_hidden_layers * width
    assert counter.get_total_flops() == 6 * (params - no_product) * tokens + attention * tokens * tokens
    formula = 6 * params * real + attention * keys  # what gpu_mfu divides by the step time
    assert formula < counter.get_total_flops()  # the causal half of the scores is not credited
