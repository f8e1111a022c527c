"""The benchmark scripts' own arithmetic, where a wrong constant would go unnoticed in their figures."""

import importlib.util
from pathlib import Path

import pytest
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


def test_gpu_mfu_profile_breakdown_sorts_kernels_and_finds_the_idle_time():
    """The --profile breakdown on a hand-written chrome trace of one step, with GPU kernel names as they appear
    on an H100 (cuBLAS, PyTorch's flash kernels, fused AdamW, inductor's Triton kernels): each kernel in its
    category, overlapping kernels counted once in the busy time, the rest of the step idle."""
    gpu_mfu = load_benchmark("gpu_mfu")
    kernels = [  # (name, start µs, duration µs)
        ("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NTT", 0, 400),
        ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>(Flash_fwd_params)", 400, 200),
        ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float>", 700, 100),
        ("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor<float, 4>>", 800, 100),
        ("triton_poi_fused__to_copy_add_mul_0", 850, 100),  # overlaps the optimizer by 50 µs
        ("Memcpy HtoD (Pinned -> Device)", 1000, 50),
        ("void at::native::vectorized_elementwise_kernel<4, MulFunctor<float>>", 1100, 100),
    ]
    trace = [{"cat": "kernel" if not name.startswith("Memcpy") else "gpu_memcpy", "name": name, "ts": ts,
              "dur": dur} for name, ts, dur in kernels]
    trace.append({"cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 2000, "tid": 1})  # ignored on a GPU
    profile = gpu_mfu.breakdown(trace, steps=1, step_s=0.002, flops={"matmul": 2e11, "attention": 1e11, "loss": 1})
    assert profile["source"] == "gpu kernels"
    assert profile["ms_by_category"] == {"matmul": 0.4, "attention": 0.2, "cross-entropy": 0.1,
                                         "optimizer+clip": 0.1, "triton fused": 0.1, "other": 0.1,
                                         "copies+casts": 0.05}
    assert profile["busy_ms"] == 1.0  # 1.05 ms of kernels, 0.05 of them overlapping
    assert profile["idle_share"] == 0.5 and profile["kernels"] == 7
    assert profile["top"][0]["name"].startswith("nvjet") and profile["top"][0]["calls"] == 1
    # 2e11 FLOPs in 0.4 ms of matmul kernels, 1e11 in 0.2 ms of attention; no kernels for "loss", no rate
    assert profile["tflops_per_s"] == {"matmul": 500.0, "attention": 500.0}


def test_gpu_mfu_profile_breakdown_on_a_cpu_counts_each_op_once():
    """Without GPU kernels (the CPU smoke test) an op's own time is its span less its children's, so the
    nested aten::linear -> aten::addmm is not counted twice."""
    gpu_mfu = load_benchmark("gpu_mfu")
    trace = [{"cat": "cpu_op", "tid": 7, "name": name, "ts": ts, "dur": dur} for name, ts, dur in [
        ("aten::linear", 0, 100), ("aten::t", 0, 10), ("aten::addmm", 10, 80),
        ("aten::_log_softmax", 200, 50), ("aten::t", 300, 10)]]
    profile = gpu_mfu.breakdown(trace, steps=1, step_s=0.001)
    assert profile["source"] == "cpu ops (self time)"
    assert profile["ms_by_category"] == {"matmul": 0.08, "cross-entropy": 0.05, "other": 0.03}  # linear 10, t 20
    assert profile["busy_ms"] == 0.16  # linear's span, log_softmax's and the second t's
    assert profile["kernels"] == 5
    assert profile["most_launched"][0] == {"name": "aten::t", "calls": 2, "ms": 0.02}


def test_gpu_mfu_configs_parse_and_a_misspelt_one_is_refused():
    gpu_mfu = load_benchmark("gpu_mfu")
    assert gpu_mfu.parse_config("varlen") == ("varlen", False, False, None, False, None)
    assert gpu_mfu.parse_config("varlen+liger-fce+compile+fsdp") == ("varlen", True, True, "default", True, None)
    assert gpu_mfu.parse_config("varlen+cudagraphs+batch4") == ("varlen", False, False, "reduce-overhead", False, 4)
    for bad in ("varlen+liger+liger-fce", "varlen+fdsp", "sdpa+compile+compile", "sdpa+compile+cudagraphs",
                "sdpa+batch0", "sdpa+batch2+batch4"):
        with pytest.raises(SystemExit, match="optionally"):
            gpu_mfu.parse_config(bad)


def test_gpu_mfu_names_the_guards_that_made_dynamo_recompile_and_why_cuda_graphs_were_skipped():
    """A compiled step that keeps compiling (as varlen+compile did on an H100) says why in its row, and so does one
    whose CUDA graphs inductor skipped (here through inductor's own reporting function: no GPU to skip on)."""
    from torch._inductor.cudagraph_utils import log_cudagraph_skip_and_bump_counter

    gpu_mfu = load_benchmark("gpu_mfu")
    watched = gpu_mfu.watch_compiler()
    try:
        double = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
        double(torch.ones(3))
        double(torch.ones(5))
        before = gpu_mfu.compiler_notes(watched)["cudagraph_skips"]
        log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to mutated inputs (1 instances)")
    finally:
        torch._logging.set_logs()
    notes = gpu_mfu.compiler_notes(watched)
    assert any("size mismatch" in guard for guard in notes["recompile_guards"]), notes
    assert notes["graph_breaks"] == {}
    assert notes["cudagraph_skips"] == before + 1
    assert notes["cudagraph_skip_reasons"] == {"skipping cudagraphs due to mutated inputs (1 instances)": 1}
    assert notes["cudagraph_recordings"] == 0


@pytest.mark.slow
def test_gpu_mfu_runs_its_matrix_on_a_cpu(tmp_path):
    """The whole script, as a device call runs it, on a tiny shape: every (config, side) pair yields a row with its
    figures, profile and compile notes, and the table prints; a GPU session's few minutes go to measuring, not to
    finding a broken pair. (+cudagraphs compiles on a CPU too; inductor skips the graphs there, and says so.)"""
    import json
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_mfu.py"
    env = {**os.environ, "OUT": str(tmp_path)}
    run = subprocess.run([sys.executable, str(script), "--shape", "tiny", "--seq", "256", "--examples", "40",
                          "--warmup", "2", "--steps", "2", "--profile", "1", "--sides", "ours,plain,trl",
                          "--configs", "sdpa,sdpa+cudagraphs+batch2@ours+trl", "--timeout", "240"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "gpu_mfu.jsonl").read_text().splitlines()]
    compiled = "sdpa+cudagraphs+batch2"
    assert [(r["config"], r["side"]) for r in rows] == [("sdpa", "ours"), ("sdpa", "plain"), ("sdpa", "trl"),
                                                         (compiled, "ours"), (compiled, "trl")]
    assert [r["batch"] for r in rows] == [1, 1, 1, 2, 2]
    for r in rows:
        assert "error" not in r and r["tokens_per_s"] > 0 and r["profile"]["kernels"] > 0, r
    compiled = [r for r in rows if r["compile"]]
    assert {r["compile"] for r in compiled} == {"reduce-overhead"}
    for r in compiled:
        assert r["cudagraph_skips"] > 0, r  # a CPU has no CUDA graphs
        # ours in one shape compiles during the warmup only (TRL's rows change length: not on 2 warmups)
        assert r["graphs_in_timed_steps"] == 0 or r["side"] == "trl", r
    assert rows[3]["packing_efficiency"] < rows[0]["packing_efficiency"] == rows[1]["packing_efficiency"]  # layout
    assert "tokens/s and MFU" in run.stdout
