"""The `sft` trainer on a tiny random Llama (SmolLM2's tokenizer and chat template): masking, stopping,
dropping, learning, loss normalisation, LoRA merge, resume."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from nt_harness.components import Context
from nt_harness.progress import Progress
from nt_sft.trainer import (
    IGNORE,
    Layout,
    SFTTrainer,
    assistant_turn,
    backward_window,
    encode_example,
    make_accelerator,
    pack_batch,
    pack_examples,
    pad_batch,
    stop_token_ids,
    token_loss_sum,
)
from nt_sft.steps import model_inputs


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> str:
    from nt_hf.models import build_tiny_llama

    folder = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_llama(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def make_examples(n: int = 8) -> pa.Table:
    """Responses of clearly different lengths, both modes: what makes normalisation matter."""
    rows = [
        {
            "trace_id": f"q{i}/0",
            "question": f"What is {i} + {i + 1}?",
            "thinking": " ".join([f"{i} plus {i + 1} makes {2 * i + 1}."] * (1 + 3 * (i % 4))),
            "answer": f"<answer>{2 * i + 1}</answer>",
            "mode": "system1" if i % 3 == 2 else "system2",
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows)


def context(tmp_path: Path, progress=None) -> Context:
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    out.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    return Context(out=out, scratch=scratch, workdir=tmp_path, threads=1, progress=progress)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# --- data ----------------------------------------------------------------------------------------


def test_labels_mask_exactly_the_prompt(tokenizer):
    response = "<think>\nadd them\n</think>\n<answer>3</answer>"
    enc = encode_example(tokenizer, "What is 1 + 2?", response, None, {tokenizer.eos_token_id})
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 1 + 2?"}], add_generation_prompt=True, tokenize=False
    )
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert enc["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert enc["labels"][n_prompt:] == enc["input_ids"][n_prompt:]
    assert tokenizer.decode(enc["input_ids"][:n_prompt]) == prompt
    assert tokenizer.decode(enc["labels"][n_prompt:]) == response + "<|im_end|>\n"


# The student families' templates in their published shape (Llama-3.1-Instruct: header ids, a system block with
# dates, trimmed contents, <|eot_id|> as EOS; Qwen2.5-Instruct: ChatML with its default system message): the hub,
# where the real tokenizers live, cannot be reached here, so these stand in for them on the tiny tokenizer.
FAMILY_TEMPLATES = {
    "llama-3": ("<|eot_id|>",
                "{{ bos_token }}{{ '<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
                "December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>' }}{% for m in messages %}"
                "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
                "{% endif %}"),
    "qwen2.5": ("<|im_end|>",
                "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are Qwen, created by "
                "Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}{% endif %}{% for m in messages %}"
                "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
}


@pytest.mark.parametrize("family", sorted(FAMILY_TEMPLATES))
def test_each_student_familys_template_trains_the_thinking_answer_and_end_of_turn(tiny, family):
    """Llama-3 and Qwen2.5 templates (SmolLM2's ChatML is the tiny tokenizer's own): the prompt, system block
    included, is masked; the targets are exactly the <think> block, the answer and the end-of-turn token, which is
    the tokenizer's EOS, so the student learns to stop."""
    from transformers import AutoTokenizer

    eos, template = FAMILY_TEMPLATES[family]
    tok = AutoTokenizer.from_pretrained(tiny)
    tok.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    tok.chat_template, tok.eos_token = template, eos
    response = assistant_turn("add them: 1 + 2", "<answer>3</answer>", "system2")
    enc = encode_example(tok, "What is 1 + 2?", response, None, {tok.eos_token_id})
    targets = [t for t in enc["labels"] if t != IGNORE]
    start = len(enc["labels"]) - len(targets)
    assert enc["labels"][:start] == [IGNORE] * start and enc["labels"][start:] == enc["input_ids"][start:]
    assert tok.decode(targets) == response + eos + ("\n" if family == "qwen2.5" else "")
    assert targets.count(tok.eos_token_id) == 1 and tok.convert_ids_to_tokens(tok.eos_token_id) == eos
    prompt = tok.decode(enc["input_ids"][:start])
    assert prompt.endswith("assistant<|end_header_id|>\n\n" if family == "llama-3" else "<|im_start|>assistant\n")
    assert ("Cutting Knowledge Date" if family == "llama-3" else "You are Qwen") in prompt


def test_system_prompt_replaces_the_template_default(tokenizer):
    enc = encode_example(tokenizer, "Q?", "A", "Think step by step.", {tokenizer.eos_token_id})
    text = tokenizer.decode(enc["input_ids"])
    assert "Think step by step." in text and "SmolLM" not in text


def test_end_of_turn_token_is_a_target(tokenizer, tiny):
    stops = stop_token_ids(tokenizer, tiny)
    assert tokenizer.eos_token_id in stops
    for response in ("<answer>3</answer>", "<think>\nx\n</think>\n<answer>3</answer>"):
        enc = encode_example(tokenizer, "Q?", response, None, stops)
        targets = [t for t in enc["labels"] if t != IGNORE]
        assert tokenizer.eos_token_id in targets


def test_eos_is_appended_when_the_template_does_not_close_the_turn(tokenizer):
    bare = tokenizer.chat_template
    try:
        tokenizer.chat_template = (
            "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
        )
        enc = encode_example(tokenizer, "Q?", "A", None, {tokenizer.eos_token_id})
        assert enc["labels"][-1] == tokenizer.eos_token_id == enc["input_ids"][-1]
    finally:
        tokenizer.chat_template = bare


def test_a_template_whose_prompt_is_not_a_prefix_is_refused(tokenizer):
    bare = tokenizer.chat_template
    try:
        tokenizer.chat_template = (
            "{% for m in messages %}{{ m['role'].upper() + ': ' + m['content'] + '\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
        )
        with pytest.raises(ValueError, match="not a prefix"):
            encode_example(tokenizer, "Q?", "A", None, {tokenizer.eos_token_id})
    finally:
        tokenizer.chat_template = bare


# --- training ------------------------------------------------------------------------------------


def test_too_long_examples_are_dropped_and_counted(tiny, tokenizer, tmp_path):
    examples = make_examples(8)
    stops = stop_token_ids(tokenizer, tiny)
    lengths = []
    for row in examples.to_pylist():
        response = row["answer"] if row["mode"] == "system1" else f"<think>\n{row['thinking']}\n</think>\n{row['answer']}"
        lengths.append(len(encode_example(tokenizer, row["question"], response, None, stops)["input_ids"]))
    limit = sorted(lengths)[4]  # keeps the five shortest (lengths may tie: count them)
    stats = SFTTrainer(epochs=1, max_length=limit).train(examples, tiny, context(tmp_path))
    assert stats["dropped_too_long"] == sum(n > limit for n in lengths) >= 1
    assert stats["examples"] == sum(n <= limit for n in lengths)

    with pytest.raises(ValueError, match="longer than max_length"):
        SFTTrainer(epochs=1, max_length=10).train(examples, tiny, context(tmp_path / "none"))


def test_loss_goes_down_and_the_folder_loads(tiny, tmp_path):
    import hashlib

    from transformers import AutoModelForCausalLM, AutoTokenizer

    ctx = context(tmp_path)
    stats = SFTTrainer(epochs=5, lr=3e-3, batch_size=4).train(make_examples(8), tiny, ctx)
    curve = stats["loss_curve"]
    assert stats["steps"] == len(curve) == 10
    assert curve[-1] < curve[0] - 1.0, curve
    assert stats["final_loss"] == curve[-1]
    assert stats["train_tokens"] > 0 and stats["tokens_per_s"] > 0

    model = AutoModelForCausalLM.from_pretrained(ctx.out / "model")
    tok = AutoTokenizer.from_pretrained(ctx.out / "model")
    assert model.dtype == torch.float32
    assert stats["provenance"]["chat_template_sha"] == hashlib.sha256(tok.chat_template.encode()).hexdigest()
    before = weights(Path(tiny))
    after = weights(ctx.out / "model")
    assert not torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])


def test_target_token_count_is_summed_over_epochs(tiny, tmp_path):
    one = SFTTrainer(epochs=1).train(make_examples(8), tiny, context(tmp_path / "a"))
    two = SFTTrainer(epochs=2).train(make_examples(8), tiny, context(tmp_path / "b"))
    assert two["train_tokens"] == 2 * one["train_tokens"] > 0


def batches_of(tokenizer, tiny, size: int) -> list[dict]:
    stops = stop_token_ids(tokenizer, tiny)
    encoded = []
    for row in make_examples(8).to_pylist():
        response = row["answer"] if row["mode"] == "system1" else f"<think>\n{row['thinking']}\n</think>\n{row['answer']}"
        encoded.append(encode_example(tokenizer, row["question"], response, None, stops))
    return [pad_batch(encoded[i : i + size], tokenizer.pad_token_id) for i in range(0, len(encoded), size)]


def test_loss_is_normalised_over_the_accumulation_window(tiny, tokenizer):
    """1 batch of 8 and 4 accumulated batches of 2 give the same gradient; a mean of batch means does not."""
    from transformers import AutoModelForCausalLM

    accelerator = make_accelerator("no")
    model = accelerator.prepare(AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32))

    def gradient(run) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        run()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    one_batch = batches_of(tokenizer, tiny, 8)
    four_batches = batches_of(tokenizer, tiny, 2)
    loss_one, tokens_one = 0.0, 0

    def run_one():
        nonlocal loss_one, tokens_one
        loss_one, tokens_one = backward_window(accelerator, model, one_batch)

    g_one = gradient(run_one)
    loss_four, tokens_four = 0.0, 0

    def run_four():
        nonlocal loss_four, tokens_four
        loss_four, tokens_four = backward_window(accelerator, model, four_batches)

    g_four = gradient(run_four)

    def mean_of_means():
        for b in four_batches:
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            (token_loss_sum(out, b["labels"]) / (b["labels"][:, 1:] != IGNORE).sum() / 4).backward()

    g_naive = gradient(mean_of_means)

    assert tokens_one == tokens_four > 0
    assert loss_one == pytest.approx(loss_four, rel=1e-5)
    assert torch.allclose(g_one, g_four, rtol=1e-4, atol=1e-7), (g_one - g_four).abs().max()
    assert (g_one - g_naive).norm() > 100 * (g_one - g_four).norm()  # the test can tell the two apart


def test_batch_8_equals_batch_2_times_accumulation_4(tiny, tmp_path):
    settings = dict(epochs=2, lr=1e-3, mixed_precision="no")
    a = SFTTrainer(batch_size=8, grad_accum=1, **settings).train(make_examples(8), tiny, context(tmp_path / "a"))
    b = SFTTrainer(batch_size=2, grad_accum=4, **settings).train(make_examples(8), tiny, context(tmp_path / "b"))
    assert a["steps"] == b["steps"] == 2
    assert a["loss_curve"] == pytest.approx(b["loss_curve"], rel=1e-5)
    w0 = weights(Path(tiny))
    wa, wb = weights(tmp_path / "a" / "out" / "model"), weights(tmp_path / "b" / "out" / "model")
    for name in wa:  # each tensor's update, as a whole: Adam's step m/sqrt(v) turns float noise in a gradient
        # near 0 into a visible change of that one element (transformers 5.24: 1 of 4,096 moved 1.4e-5 of 2e-3)
        update = (wa[name] - w0[name]).norm()
        assert (wa[name] - wb[name]).norm() <= 1e-3 * update, name


def test_lora_writes_a_merged_model_and_the_adapter(tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ctx = context(tmp_path)
    stats = SFTTrainer(lora=True, lora_r=4, lr=1e-2, epochs=1, mixed_precision="no").train(make_examples(8), tiny, ctx)
    assert stats["steps"] == 2
    assert (ctx.out / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(ctx.out / "model")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), ctx.out / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        merged_logits, adapted_logits, base_logits = (m(ids).logits for m in (merged, adapted, base))
    assert torch.allclose(merged_logits, adapted_logits, atol=1e-4)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4)  # the adapter learned something


class Interrupted(Exception):
    pass


def interrupt():
    raise Interrupted


class StopAfter(Progress):
    """A progress display that stops the run right after ``steps`` optimizer steps: by default with an
    exception, as Ctrl-C would; ``stop`` may instead SIGKILL the process."""

    def __init__(self, steps: int, stop=interrupt):
        super().__init__(disable=True)
        self.steps, self.stop = steps, stop

    @contextmanager
    def task(self, description, total):
        with super().task(description, total) as advance:
            count = 0

            def advance_then_stop(n=1, info=None):
                nonlocal count
                advance(n, info)
                count += n
                if count >= self.steps:
                    self.stop()

            yield advance_then_stop


def test_a_killed_run_resumes_to_the_same_weights(tiny, tmp_path):
    settings = dict(epochs=2, batch_size=2, lr=1e-3, save_every_steps=3)  # 4 steps an epoch, 8 in all
    whole = SFTTrainer(**settings).train(make_examples(8), tiny, context(tmp_path / "whole"))

    with pytest.raises(Interrupted):  # killed after step 5; the last checkpoint is step 3, mid-epoch 0
        SFTTrainer(**settings).train(make_examples(8), tiny, context(tmp_path / "killed", StopAfter(5)))
    assert (tmp_path / "killed" / "scratch" / "checkpoint").exists()
    resumed = SFTTrainer(**settings).train(make_examples(8), tiny, context(tmp_path / "killed"))

    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == whole["steps"] == 8
    assert resumed["train_tokens"] == whole["train_tokens"]
    assert resumed["loss_curve"] == pytest.approx(whole["loss_curve"], rel=1e-5)
    wa, wb = weights(tmp_path / "whole" / "out" / "model"), weights(tmp_path / "killed" / "out" / "model")
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-6), name


def test_the_plugin_registers_the_trainer():
    from nt_harness.plugins import Plugins

    assert Plugins().component("trainer", "sft") is SFTTrainer


def test_settings_refuse_unknown_keys():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        SFTTrainer(learning_rate=1e-5)
    assert SFTTrainer().settings.lr == 2e-5 and SFTTrainer().settings.weight_decay == 0.1


def test_a_global_batch_sets_the_accumulation_and_must_divide():
    from pydantic import ValidationError

    # LIMO's global batch 32 on 8 processes of 1 sequence each: 4 micro-batches per optimizer step
    assert SFTTrainer(global_batch=32, batch_size=1, num_processes=8, grad_accum=3).settings.grad_accum == 4
    assert SFTTrainer(global_batch=16).settings.grad_accum == 4  # the default micro-batch of 4, one process
    with pytest.raises(ValidationError, match="global_batch 30 is not a multiple of batch_size x num_processes = 4"):
        SFTTrainer(global_batch=30)


def test_gradient_checkpointing_with_lora_matches_plain(tiny, tmp_path):
    settings = dict(lora=True, lora_r=4, lr=1e-2, epochs=2, mixed_precision="no")
    plain = SFTTrainer(**settings).train(make_examples(8), tiny, context(tmp_path / "plain"))
    ckpt = SFTTrainer(gradient_checkpointing=True, **settings).train(make_examples(8), tiny, context(tmp_path / "ckpt"))
    assert ckpt["loss_curve"] == pytest.approx(plain["loss_curve"], rel=1e-5)
    assert ckpt["loss_curve"][-1] < ckpt["loss_curve"][0]


def test_schedules_reach_their_end_points():
    from nt_sft.trainer import build_schedule

    def lrs(**kw):
        settings = SFTTrainer(lr=1.0, **kw).settings
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=settings.lr)
        schedule = build_schedule(optimizer, settings, total_steps=10)
        out = []
        for _ in range(10):
            out.append(schedule.get_last_lr()[0])
            optimizer.step()
            schedule.step()
        return out + [schedule.get_last_lr()[0]]

    assert lrs() == [1.0] * 11
    assert lrs(warmup_ratio=0.2)[:3] == [0.0, 0.5, 1.0]
    assert lrs(schedule="cosine")[-1] == pytest.approx(0.0, abs=1e-9)
    assert lrs(schedule="cosine_min", min_lr_ratio=0.1)[-1] == pytest.approx(0.1)


DDP_WORKER = '''
import sys, torch
sys.path.insert(0, {tests!r})
from test_sft import batches_of
from transformers import AutoModelForCausalLM, AutoTokenizer
from nt_sft.trainer import backward_window, make_accelerator

torch.set_num_threads(1)
tiny, out = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(tiny)
accelerator = make_accelerator("no")
model = accelerator.prepare(AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32))
pairs = batches_of(tokenizer, tiny, 2)  # 4 micro-batches of very different lengths; rank r takes r and r + 2
loss, tokens = backward_window(accelerator, model, pairs[accelerator.process_index::accelerator.num_processes])
if accelerator.is_main_process:
    torch.save({{"grad": torch.cat([p.grad.flatten() for p in model.parameters()]), "loss": loss,
                "tokens": tokens, "processes": accelerator.num_processes}}, out)
'''


def test_loss_is_normalised_across_processes(tiny, tokenizer, tmp_path):
    """Two gloo processes with two micro-batches each give the gradient of one batch of 8 in one process."""
    import os
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM

    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER.format(tests=str(Path(__file__).parent)))
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(worker), tiny, str(tmp_path / "g.pt")],
                   env=env, check=True, timeout=120, capture_output=True)
    ddp = torch.load(tmp_path / "g.pt")

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    batch = batches_of(tokenizer, tiny, 8)[0]
    tokens = (batch["labels"][:, 1:] != IGNORE).sum()
    loss = token_loss_sum(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                          batch["labels"]) / tokens
    loss.backward()
    reference = torch.cat([p.grad.flatten() for p in model.parameters()])

    assert ddp["processes"] == 2 and ddp["tokens"] == int(tokens)
    assert ddp["loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert torch.allclose(ddp["grad"], reference, rtol=1e-4, atol=1e-7), (ddp["grad"] - reference).abs().max()


# --- packing -------------------------------------------------------------------------------------


def encoded_examples(tokenizer, tiny, n: int = 8) -> list[dict]:
    stops = stop_token_ids(tokenizer, tiny)
    out = []
    for row in make_examples(n).to_pylist():
        response = row["answer"] if row["mode"] == "system1" else f"<think>\n{row['thinking']}\n</think>\n{row['answer']}"
        out.append(encode_example(tokenizer, row["question"], response, None, stops))
    return out


def packed(examples: list[dict], room: int = 40) -> tuple[list[list[dict]], int]:
    """The examples packed best-fit decreasing into packs of the longest one + ``room`` tokens; that capacity."""
    lengths = [len(e["input_ids"]) for e in examples]
    capacity = max(lengths) + room
    return [[examples[i] for i in pack] for pack in pack_examples(lengths, capacity)], capacity


def test_best_fit_decreasing_packs_every_example_once_within_capacity():
    lengths = [70, 20, 50, 30, 100, 10, 60, 40, 30, 90]
    packs = pack_examples(lengths, 100)
    assert sorted(i for p in packs for i in p) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in p) <= 100 for p in packs)
    assert len(packs) == 5  # 500 tokens in packs of 100: the fewest possible here
    with pytest.raises(ValueError, match="does not fit"):
        pack_examples([101], 100)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_unpacked_logits(tiny, tokenizer, attn):
    """Each example's logits are the same alone and packed with others: no attention across examples."""
    from transformers import AutoModelForCausalLM
    from transformers.masking_utils import find_packed_sequence_indices

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32, attn_implementation=attn).eval()
    examples = encoded_examples(tokenizer, tiny)[:5]
    # two packed rows of different lengths: the shorter one is padded with a sequence of its own
    batch = pack_batch([examples[:3], examples[3:]], tokenizer.pad_token_id)
    assert find_packed_sequence_indices(batch["position_ids"]) is not None  # transformers sees the packing
    with torch.no_grad():
        packed = model(**model_inputs(batch)).logits
        alone = [model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in examples]
        # the controls: the same row without restarting positions, or with the KV cache on, lets later
        # examples see earlier ones
        row = batch["input_ids"][:1]
        leaky = model(input_ids=row, position_ids=torch.arange(row.size(1))[None]).logits
        cached = model(input_ids=row, position_ids=batch["position_ids"][:1], use_cache=True).logits

    offsets = [0, *torch.tensor([len(e["input_ids"]) for e in examples[:3]]).cumsum(0).tolist()]
    for i, e in enumerate(examples):
        r, start = (0, offsets[i]) if i < 3 else (1, 0 if i == 3 else len(examples[3]["input_ids"]))
        n = len(e["input_ids"])
        assert torch.allclose(packed[r, start : start + n], alone[i], atol=1e-5), (i, attn)
    second = slice(offsets[1], offsets[2])
    assert not torch.allclose(leaky[0, second], alone[1], atol=1e-3)
    assert not torch.allclose(cached[0, second], alone[1], atol=1e-3)


def test_prepared_model_keeps_its_logits_in_bf16_and_its_loss(tiny):
    """Accelerate's bf16 forward would upcast the whole logits tensor to fp32 (unused: the loss is computed
    in fp32 by the model); without that copy the loss and gradient are bit for bit the same, and the model
    still unwraps to a plain forward for saving."""
    from nt_sft.trainer import skip_output_upcast
    from transformers import AutoModelForCausalLM

    accelerator = make_accelerator("bf16")
    upcast, kept = (accelerator.prepare(AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32))
                    for _ in range(2))
    skip_output_upcast(accelerator, kept)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    outputs = [m(input_ids=ids, labels=ids) for m in (upcast, kept)]
    assert [o.logits.dtype for o in outputs] == [torch.float32, torch.bfloat16]
    assert outputs[0].loss.dtype == outputs[1].loss.dtype == torch.float32
    assert outputs[0].loss.item() == outputs[1].loss.item()
    for o in outputs:
        o.loss.backward()
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(upcast.parameters(), kept.parameters()))
    plain = accelerator.unwrap_model(kept, keep_fp32_wrapper=False)
    assert plain(input_ids=ids).logits.dtype == torch.float32  # no autocast left either
    skip_output_upcast(make_accelerator("no"), plain)  # nothing to undo: a no-op


def test_packed_and_padded_batches_give_the_same_gradient(tiny, tokenizer):
    from transformers import AutoModelForCausalLM

    accelerator = make_accelerator("no")
    model = accelerator.prepare(AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32))
    examples = encoded_examples(tokenizer, tiny)
    packs, capacity = packed(examples)
    assert len(packs) < len(examples)

    def gradient(batches) -> tuple[torch.Tensor, float, int]:
        model.zero_grad(set_to_none=True)
        loss, tokens = backward_window(accelerator, model, batches)
        return torch.cat([p.grad.flatten() for p in model.parameters()]), loss, tokens

    g_padded, loss_padded, tokens_padded = gradient([pad_batch(examples, tokenizer.pad_token_id)])
    g_packed, loss_packed, tokens_packed = gradient([pack_batch(packs, tokenizer.pad_token_id)])
    g_row, _, _ = gradient([pack_batch(packs, tokenizer.pad_token_id, one_row=True)])
    # a compiled run's fixed layout: packs padded to full length, an all-padding pack, the head everywhere
    layout = Layout.of(packs, len(packs) + 1, capacity)
    g_fixed, loss_fixed, tokens_fixed = gradient([pack_batch(packs, tokenizer.pad_token_id, layout=layout)])
    assert tokens_packed == tokens_padded == tokens_fixed > 0
    assert loss_packed == pytest.approx(loss_padded, rel=1e-5) and loss_fixed == pytest.approx(loss_padded, rel=1e-5)
    assert torch.allclose(g_packed, g_padded, rtol=1e-4, atol=1e-7), (g_packed - g_padded).abs().max()
    assert torch.allclose(g_row, g_padded, rtol=1e-4, atol=1e-7)
    assert torch.allclose(g_fixed, g_padded, rtol=1e-4, atol=1e-7), (g_fixed - g_padded).abs().max()


def test_a_layout_gives_every_batch_one_shape(tokenizer, tiny):
    """What a compiled step needs to trace once (and a CUDA graph to replay): batches of other packs, fewer
    packs, other example counts all have the same tensor shapes and the same max_length; too big a pack is refused."""
    packs, capacity = packed(encoded_examples(tokenizer, tiny))
    layout = Layout.of(packs, 2, capacity)
    assert layout.sequences == max(len(p) for p in packs) + 1
    for one_row, varlen in [(False, False), (True, True)]:
        batches = [pack_batch(chunk, tokenizer.pad_token_id, one_row, varlen, layout)
                   for chunk in (packs[:2], packs[2:4], packs[-1:])]
        shapes = [{k: getattr(v, "shape", v) for k, v in b.items() if k not in ("real_tokens", "targets")}
                  for b in batches]
        assert shapes[0] == shapes[1] == shapes[2], shapes
        assert batches[0]["input_ids"].numel() == 2 * capacity
        assert batches[2]["real_tokens"] == sum(len(e["input_ids"]) for e in packs[-1])
        if varlen:
            cu = batches[2]["cu_seq_lens_q"]
            assert cu[-1] == 2 * capacity and cu.diff().min() == 0  # empty sequences at the end
            assert batches[2]["max_length_q"] == capacity
    with pytest.raises(ValueError, match="do not fit the layout"):
        pack_batch(packs[:3], tokenizer.pad_token_id, layout=layout)


def test_packed_training_learns_and_reports_its_efficiency(tiny, tmp_path):
    settings = dict(epochs=4, lr=3e-3, max_length=256, mixed_precision="no")
    padded = SFTTrainer(batch_size=4, **settings).train(make_examples(8), tiny, context(tmp_path / "padded"))
    packed = SFTTrainer(batch_size=1, packing=True, **settings).train(make_examples(8), tiny, context(tmp_path / "packed"))
    assert packed["packs"] < packed["examples"] == padded["examples"] == 8
    assert packed["train_tokens"] == padded["train_tokens"]  # the same targets, fewer sequences
    assert packed["packing_efficiency"] > padded["packing_efficiency"]
    assert 0 < padded["packing_efficiency"] < 1 and packed["packing_efficiency"] <= 1
    assert packed["loss_curve"][-1] < packed["loss_curve"][0] - 1.0
    with pytest.raises(ValueError, match="shorter than max_length"):
        SFTTrainer(packing=True, pack_length=100, max_length=256).train(make_examples(8), tiny, context(tmp_path / "x"))


def test_compile_is_in_the_cache_key_and_off_means_off(monkeypatch):
    """Compiled kernels may round differently, so ``compile`` is part of the cache key; and off is said to
    Accelerate explicitly, so an ACCELERATE_DYNAMO_BACKEND in the environment cannot compile behind the key."""
    from accelerate.utils import DynamoBackend
    from nt_sft.steps import dynamo_plugin

    assert "compile" not in SFTTrainer.execution
    assert SFTTrainer(compile=True).key_settings() != SFTTrainer().key_settings()
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "inductor")
    assert dynamo_plugin(None).backend == DynamoBackend.NO
    on = dynamo_plugin("default")
    assert on.backend == DynamoBackend.INDUCTOR and on.use_regional_compilation and on.dynamic
    graphs = dynamo_plugin("reduce-overhead", static_shapes=True)
    assert graphs.mode == "reduce-overhead" and graphs.dynamic is False


def test_settings_that_would_go_wrong_or_do_nothing_are_refused():
    assert SFTTrainer(compile=True, packing=True, compile_mode="reduce-overhead").settings.compile_mode
    for unsafe in ({"packing": False}, {"packing": True, "grad_accum": 2}):  # more than one shape, accumulation
        with pytest.raises(ValueError, match="replays CUDA graphs"):
            SFTTrainer(compile=True, compile_mode="reduce-overhead", **unsafe)
    assert SFTTrainer(liger="auto", liger_fused_ce=True).settings.liger_fused_ce
    with pytest.raises(ValueError, match="set liger to true"):
        SFTTrainer(liger_fused_ce=True)
    with pytest.raises(ValueError, match="pack_length 16384 is shorter than max_length 32768"):
        SFTTrainer(packing=True, pack_length=16384, max_length=32768)  # refused when checked, not in training
    assert SFTTrainer(packing=False, pack_length=16384, max_length=32768).settings.max_length == 32768


def test_a_recipes_bad_trainer_settings_are_named(tmp_path):
    """Through the pipeline, as a recipe's or --set's settings reach the trainer: the key, or the section when the
    check spans several keys."""
    from nt_harness.pipeline import Pipeline
    from nt_harness.plugins import Plugins
    from nt_harness.recipes import SpecError
    from nt_harness.store import Store

    pipe = Pipeline(Plugins(), Store(tmp_path), Progress(disable=True), threads=1)
    with pytest.raises(SpecError, match=r"trainer\.lr: Input should be a valid number"):
        pipe.instantiate("trainer", {"name": "sft", "lr": "abc"}, "trainer")
    with pytest.raises(SpecError, match=r"'sft': trainer: Value error, compile_mode reduce-overhead replays CUDA"):
        pipe.instantiate("trainer", {"name": "sft", "compile": True, "compile_mode": "reduce-overhead"}, "trainer")


@contextmanager
def recompile_log():
    """The reasons dynamo recompiled while the block ran (what ``TORCH_LOGS=recompiles`` prints)."""
    import logging

    messages, keep, logger = [], logging.Handler(), logging.getLogger("torch._dynamo.guards.__recompiles")
    keep.emit = lambda record: messages.append(record.getMessage())
    torch._logging.set_logs(recompiles=True)
    logger.addHandler(keep)
    try:
        yield messages
    finally:
        logger.removeHandler(keep)
        torch._logging.set_logs()


@pytest.mark.slow
@pytest.mark.parametrize("variant", [{}, {"lora": True, "lora_r": 4}, {"gradient_checkpointing": True},
                                     {"attn_implementation": "varlen"}],
                         ids=["full", "lora", "gradient_checkpointing", "varlen"])
def test_compiled_packed_training_matches_eager(tiny, tmp_path, variant, request):
    """compile=True (Accelerate's regional torch.compile, inductor) trains a packed fp32 run to the same loss
    curve and weights as eager, and writes a plain folder (no compile wrapper in the weight names); also with
    LoRA (peft's wrapped layers compile), with gradient checkpointing (the compiled layers recompute) and with
    PyTorch's varlen op (CPU kernels standing in for its CUDA ones), whose sequence boundaries are padded with
    empty sequences. Packs of other lengths and sequence counts recompile nothing and break no graph: every batch
    has one shape (steps.Layout). 10-20 s each on a CPU with inductor's cache warm, nearly all of it compiling."""
    from torch._dynamo.utils import counters

    if "attn_implementation" in variant:
        request.getfixturevalue("varlen_op_on_cpu")
    settings = dict(epochs=2, lr=3e-3, max_length=256, batch_size=1, packing=True, mixed_precision="no") | variant
    eager = SFTTrainer(**settings).train(make_examples(8), tiny, context(tmp_path / "eager"))
    graphs = counters["stats"]["unique_graphs"]
    with recompile_log() as recompiles:
        compiled = SFTTrainer(compile=True, **settings).train(make_examples(8), tiny, context(tmp_path / "compiled"))
    assert counters["stats"]["unique_graphs"] > graphs  # dynamo did compile something
    assert not [r for r in recompiles if "size mismatch" in r], recompiles
    assert not counters["graph_break"], counters["graph_break"]
    assert compiled["attn_implementation"] == eager["attn_implementation"] == variant.get("attn_implementation", "sdpa")
    assert compiled["packs"] == eager["packs"] < 8
    assert compiled["loss_curve"] == pytest.approx(eager["loss_curve"], rel=1e-5)
    assert compiled["loss_curve"][-1] < compiled["loss_curve"][0] - 0.2  # it learned (LoRA r=4 the least)
    we, wc = weights(tmp_path / "eager" / "out" / "model"), weights(tmp_path / "compiled" / "out" / "model")
    assert we.keys() == wc.keys()
    for name in we:
        assert torch.allclose(we[name], wc[name], atol=5e-5), name


@pytest.mark.slow
def test_the_compiled_loss_takes_each_windows_count_without_recompiling(tiny, tokenizer):
    """compile_loss: one graph for the model's own loss over windows of other target counts (the count reaches it
    as a tensor), the same loss and gradient as eager."""
    from nt_sft.steps import compile_loss
    from torch._dynamo.utils import counters
    from transformers import AutoModelForCausalLM

    torch._dynamo.reset()  # ForCausalLMLoss is one function for every model: earlier tests' graphs of it go
    eager, compiled = (AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32) for _ in range(2))
    compile_loss(compiled, static_shapes=True)
    accelerator = make_accelerator("no")
    packs, capacity = packed(encoded_examples(tokenizer, tiny))
    layout = Layout.of(packs, 1, capacity)
    graphs, targets = counters["stats"]["unique_graphs"], set()
    with recompile_log() as recompiles:
        for pack in packs[:3]:
            batch = pack_batch([pack], tokenizer.pad_token_id, layout=layout)
            targets.add(batch["targets"])
            for model in (eager, compiled):
                model.zero_grad(set_to_none=True)
            assert backward_window(accelerator, compiled, [batch]) == pytest.approx(
                backward_window(accelerator, eager, [batch]), rel=1e-5)
            for a, b in zip(eager.parameters(), compiled.parameters()):
                assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7)
    assert len(targets) == 3  # another count each window
    assert counters["stats"]["unique_graphs"] == graphs + 1 and not recompiles, recompiles


# --- accelerate launch ---------------------------------------------------------------------------


def test_accelerate_launch_with_two_processes_matches_one_process(tiny, tmp_path):
    """The stage relaunched under `accelerate launch` (2 CPU processes, gloo, batch 2 each) trains like one
    process with batch 4: the same examples per step, the loss normalised over both processes. The main process
    writes metrics.parquet into the stage output and logs to TensorBoard, once."""
    settings = dict(epochs=2, lr=1e-3, mixed_precision="no", seed=3)
    one = SFTTrainer(batch_size=4, **settings).train(make_examples(8), tiny, context(tmp_path / "one"))
    two = SFTTrainer(batch_size=2, num_processes=2, report_to=["tensorboard"], **settings).train(
        make_examples(8), tiny, context(tmp_path / "two"))
    assert two["processes"] == 2 and one["processes"] == 1 and two["distributed"] == "MULTI_CPU"
    assert two["steps"] == one["steps"] == 4
    assert two["train_tokens"] == one["train_tokens"]
    assert two["loss_curve"] == pytest.approx(one["loss_curve"], rel=1e-5)
    wa, wb = weights(tmp_path / "one" / "out" / "model"), weights(tmp_path / "two" / "out" / "model")
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-5), name
    metrics = pq.read_table(tmp_path / "two" / "out" / "metrics.parquet").to_pydict()  # the main process wrote it
    assert metrics["step"] == [1, 2, 3, 4] and metrics["loss"] == two["loss_curve"]
    assert sum(metrics["target_tokens"]) == two["train_tokens"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (tmp_path / "two" / "out" / "trackers" / "nt-harness").glob("events.out.tfevents.*")  # one process's
    tensorboard = EventAccumulator(str(events))
    tensorboard.Reload()
    assert [e.step for e in tensorboard.Scalars("loss")] == [1, 2, 3, 4]


def test_an_accelerate_config_is_launched_even_for_one_process(tiny, tmp_path):
    """accelerate_config with num_processes 1 is not ignored: the stage runs under `accelerate launch` with it
    (one GPU under fsdp.yaml is a real setup) and trains like the in-process run."""
    settings = dict(epochs=1, lr=1e-3, mixed_precision="no", seed=3)
    config = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "ddp.yaml"
    alone = SFTTrainer(**settings).train(make_examples(8), tiny, context(tmp_path / "alone"))
    launched = SFTTrainer(accelerate_config=str(config), **settings).train(
        make_examples(8), tiny, context(tmp_path / "launched"))
    assert (tmp_path / "launched" / "scratch" / "launch" / "stats.json").exists()
    assert not (tmp_path / "alone" / "scratch" / "launch").exists()
    assert launched["loss_curve"] == pytest.approx(alone["loss_curve"], rel=1e-5)


# --- sharded training: the shipped FSDP2 and DeepSpeed ZeRO-3 configs, on CPU processes -----------------

SHARDED_WORKER = """
\"\"\"nt_sft.launch (the by-hand route of a multi-node run) on CPU processes, with an FSDP or DeepSpeed config.

Accelerate 1.15 (state.py) enables FSDP only from a GPU-type state and DeepSpeed only when not on CPU: without
GPUs the trainer would run plain DDP. Two shims, for this test only: FSDP gets its plugin (read from the
launcher's FSDP_* variables, with the mixed-precision policy Accelerate gives a GPU state) on the gloo
MULTI_CPU state; DeepSpeed gets a gloo process group before the trainer builds its Accelerator. Everything else (prepare, clipping, save_state, load_state, the gathered save) is the
trainer's and Accelerate's own code. STOP_AFTER=n SIGKILLs every rank as step n+1 starts.
\"\"\"
import os, signal

from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

import nt_sft.steps as steps
import nt_sft.trainer as trainer

if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
    PartialState(backend="gloo")


def make_accelerator(*args, **kwargs):
    accelerator = steps.make_accelerator(*args, **kwargs)
    if accelerator.distributed_type == DistributedType.MULTI_CPU and os.environ.get("ACCELERATE_USE_FSDP") == "true":
        plugin = FullyShardedDataParallelPlugin()
        if accelerator.mixed_precision != "no":  # as AcceleratorState does for a GPU-type state
            plugin.set_mixed_precision(accelerator.mixed_precision)
        accelerator.state.fsdp_plugin = plugin
        accelerator.state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return accelerator


stop, started = int(os.environ.get("STOP_AFTER", 0)), 0


def optimizer_step(*args, **kwargs):
    global started
    if stop and started == stop:
        os.kill(os.getpid(), signal.SIGKILL)
    started += 1
    return steps.optimizer_step(*args, **kwargs)


trainer.make_accelerator, trainer.optimizer_step = make_accelerator, optimizer_step
from nt_sft.launch import main

main()
from accelerate.state import AcceleratorState
from torch._dynamo.utils import counters

print("compiled graphs:", counters["stats"]["unique_graphs"])
plugin = getattr(AcceleratorState(), "fsdp_plugin", None)  # DeepSpeed's state has no such attribute
if plugin is not None:
    print("fsdp mixed precision:", plugin.mixed_precision_policy)
"""


def launch_sharded(kind: str, tiny: str, work: Path, settings: dict, stop_after: int = 0):
    """``accelerate launch --config_file configs/accelerate/<kind>.yaml`` (the shipped file) with 2 CPU processes."""
    import json
    import os
    import subprocess
    import sys

    import pyarrow.parquet as pq

    from nt_sft.trainer import free_port

    config = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / f"{kind}.yaml"
    work.mkdir(parents=True, exist_ok=True)
    (work / "worker.py").write_text(SHARDED_WORKER)
    pq.write_table(make_examples(8), work / "examples.parquet")
    (work / "settings.json").write_text(json.dumps(settings))
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(OMP_NUM_THREADS="1", STOP_AFTER=str(stop_after), DS_ACCELERATOR="cpu")
    if kind == "fsdp":
        env["ACCELERATE_USE_CPU"] = "1"  # gloo CPU processes (MULTI_CPU), as the trainer's own launch sets it
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
               "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(free_port()),
               str(work / "worker.py"), "--examples", str(work / "examples.parquet"), "--student", tiny,
               "--out", str(work / "out"), "--scratch", str(work / "scratch"), "--threads", "1",
               "--settings", str(work / "settings.json"), "--stats", str(work / "stats.json")]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fsdp", "deepspeed_zero3"])
def test_sharded_training_resumes_and_matches_one_process(kind, tiny, tmp_path):
    """The shipped FSDP2 / ZeRO-3 config on 2 CPU processes (batch 1 each), SIGKILLed after step 5 and relaunched,
    resumes from its sharded checkpoint of step 3 and ends where one process with batch 2 does; the gathered final
    model is a plain folder that transformers loads with the full shapes, tied weights written once."""
    import json

    from transformers import AutoModelForCausalLM

    if kind.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    settings = dict(epochs=2, lr=1e-3, mixed_precision="no", seed=3)
    one = SFTTrainer(batch_size=2, **settings).train(make_examples(8), tiny, context(tmp_path / "one"))
    sharded = dict(batch_size=1, save_every_steps=3, **settings)

    killed = launch_sharded(kind, tiny, tmp_path / "two", sharded, stop_after=5)
    assert killed.returncode != 0, killed.stderr[-3000:]
    checkpoint = tmp_path / "two" / "scratch" / "checkpoint"
    shard = {"fsdp": "pytorch_model_fsdp_0/__1_0.distcp",  # torch.distributed.checkpoint, one file per rank
             "deepspeed_zero3": "pytorch_model/zero_pp_rank_1_mp_rank_00_optim_states.pt"}[kind]
    assert (checkpoint / shard).exists(), sorted(p.name for p in checkpoint.rglob("*"))
    assert not (tmp_path / "two" / "out" / "model").exists()

    resumed = launch_sharded(kind, tiny, tmp_path / "two", sharded)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "stats.json").read_text())
    assert two["distributed"] == {"fsdp": "FSDP", "deepspeed_zero3": "DEEPSPEED"}[kind] and two["processes"] == 2
    assert two["resumed_from_step"] == 3 and two["steps"] == one["steps"] == 8
    metrics = pq.read_table(tmp_path / "two" / "out" / "metrics.parquet").to_pydict()
    assert metrics["step"] == list(range(1, 9)) and all(norm > 0 for norm in metrics["grad_norm"])
    assert two["train_tokens"] == one["train_tokens"]
    assert two["loss_curve"] == pytest.approx(one["loss_curve"], rel=1e-5)
    wa, wb = weights(tmp_path / "one" / "out" / "model"), weights(tmp_path / "two" / "out" / "model")
    assert wa.keys() == wb.keys()  # lm_head, tied to embed_tokens, is not written a second time
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-5), name
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "out" / "model").state_dict()
    student = AutoModelForCausalLM.from_pretrained(tiny).state_dict()
    assert {k: v.shape for k, v in loaded.items()} == {k: v.shape for k, v in student.items()}


@pytest.mark.slow
@pytest.mark.parametrize("variant", [{"mixed_precision": "bf16"},
                                     {"mixed_precision": "bf16", "lora": True, "lora_r": 4},
                                     {"mixed_precision": "no", "compile": True}], ids=["bf16", "bf16-lora", "compile"])
def test_fsdp_with_bf16_or_compile_trains_like_one_process(variant, tiny, tmp_path):
    """The shipped FSDP2 config under bf16 (FSDP's mixed precision: bf16 compute over the fp32 shards, gradients
    reduced in fp32, the loss left in fp32 by steps.fsdp_precision), so with LoRA (frozen and trained parameters
    in one shard unit; adapter and merged model written), and with regional torch.compile (every rank
    compiles its decoder layers) on 2 CPU processes ends where one process with batch 2 does: bf16 within its
    rounding (one process autocasts, so its residual stream stays fp32), compiled fp32 like eager."""
    import json
    import re

    settings = dict(epochs=2, lr=1e-3, seed=3, **variant)
    one = SFTTrainer(batch_size=2, **settings).train(make_examples(8), tiny, context(tmp_path / "one"))
    run = launch_sharded("fsdp", tiny, tmp_path / "two", dict(batch_size=1, **settings))
    assert run.returncode == 0, run.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "stats.json").read_text())
    assert two["distributed"] == "FSDP" and two["steps"] == one["steps"] == 8
    graphs = [int(n) for n in re.findall(r"compiled graphs: (\d+)", run.stdout)]
    assert len(graphs) == 2 and all(graphs) == bool(variant.get("compile")), graphs
    bf16 = variant["mixed_precision"] == "bf16"
    if bf16:
        assert "param_dtype=torch.bfloat16, reduce_dtype=torch.float32, output_dtype=None" in run.stdout, run.stdout
        # a loss cast to bf16 by FSDP's output_dtype would have 8 significant bits
        assert any(torch.tensor(x).bfloat16().item() != x for x in two["loss_curve"]), two["loss_curve"]
    assert two["loss_curve"] == pytest.approx(one["loss_curve"], rel=5e-4 if bf16 else 1e-5)
    assert two["loss_curve"][-1] < two["loss_curve"][0] - (0.1 if "lora" in variant else 0.5)
    if "lora" in variant:
        assert (tmp_path / "two" / "out" / "adapter" / "adapter_model.safetensors").exists()
    wa, wb = weights(tmp_path / "one" / "out" / "model"), weights(tmp_path / "two" / "out" / "model")
    for name in wa:  # Adam moves a weight whose tiny gradient flips sign under bf16 rounding by a full lr
        assert torch.allclose(wa[name], wb[name], atol=1e-2 if bf16 else 1e-5), name


# --- GPU paths: PyTorch's varlen flash kernel and Liger (plumbing on CPU, kernels under -m gpu) -----


def reference_varlen_attn(style: str, calls: list):
    """torch.nn.attention.varlen.varlen_attn's semantics on the CPU (sdpa on each sequence), with the
    signature of torch 2.10 (``is_causal``, equal head counts) or of 2.12+ (``window_size``, ``enable_gqa``)."""
    import torch.nn.functional as F

    def run(q, k, v, cu, causal, scale, gqa):
        calls.append(cu.tolist())
        if k.size(1) != q.size(1) and not gqa:
            raise ValueError("head counts differ")
        out = torch.empty_like(q)
        for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
            q_, k_, v_ = (x[a:b].transpose(0, 1) for x in (q, k, v))
            out[a:b] = F.scaled_dot_product_attention(q_, k_, v_, is_causal=causal, scale=scale,
                                                      enable_gqa=gqa).transpose(0, 1)
        return out

    if style == "2.10":
        def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None):
            return run(query, key, value, cu_seq_q, is_causal, None, False)
    else:
        def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                        window_size=(-1, -1), enable_gqa=False):
            return run(query, key, value, cu_seq_q, tuple(window_size) == (-1, 0), scale, enable_gqa)
    return varlen_attn


@pytest.fixture
def varlen_op_on_cpu(monkeypatch):
    """PyTorch's own varlen op, its fake kernel and autograd formula (what torch.compile traces), with CPU kernels
    standing in for its CUDA ones for the test: causal attention within each sequence (grouped-query heads by
    repetition, as sdpa's enable_gqa), and its gradient written out."""
    from nt_sft import steps

    def sequences(cu):
        return [(a, b) for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()) if b > a]

    def heads(x, a, b, groups):  # (tokens, heads, dim) of one sequence -> (query heads, tokens, dim)
        return x[a:b].transpose(0, 1).repeat_interleave(groups, 0)

    def probabilities(q, k, scale):
        causal = torch.ones(q.size(1), q.size(1), dtype=torch.bool).tril()
        return (scale * q @ k.transpose(1, 2)).masked_fill(~causal, float("-inf")).softmax(-1)

    def forward(query, key, value, cu, cu_k, max_q, max_k, is_causal=False, scale=None, *unused):
        out, groups, scale = torch.zeros_like(query), query.size(1) // key.size(1), scale or query.size(-1) ** -0.5
        for a, b in sequences(cu):
            q, k, v = heads(query, a, b, 1), heads(key, a, b, groups), heads(value, a, b, groups)
            out[a:b] = (probabilities(q, k, scale) @ v).transpose(0, 1)
        return out, torch.zeros(query.size(1), query.size(0)), torch.zeros(2, dtype=torch.uint64)

    def backward(grad, query, key, value, out, lse, cu, cu_k, max_q, max_k, is_causal, rng, scale=None, *unused):
        dq, dk, dv = (torch.zeros_like(x) for x in (query, key, value))
        groups, scale = query.size(1) // key.size(1), scale or query.size(-1) ** -0.5
        for a, b in sequences(cu):
            q, g = heads(query, a, b, 1), heads(grad, a, b, 1)
            k, v = heads(key, a, b, groups), heads(value, a, b, groups)
            p = probabilities(q, k, scale)
            ds = p * (g @ v.transpose(1, 2) - (g * (p @ v)).sum(-1, keepdim=True))
            dq[a:b] = (scale * ds @ k).transpose(0, 1)
            for target, product in ((dk, scale * ds.transpose(1, 2) @ q), (dv, p.transpose(1, 2) @ g)):
                target[a:b] = product.transpose(0, 1).unflatten(1, (key.size(1), groups)).sum(2)
        return dq, dk, dv

    library = torch.library.Library("torch_attn", "IMPL")
    library.impl("_varlen_attn", forward, "CPU")
    library.impl("_varlen_attn_backward", backward, "CPU")
    monkeypatch.setattr(steps, "varlen_available", lambda: True)
    yield
    library._destroy()


def test_the_cpu_stand_in_for_the_varlen_kernel_is_right(varlen_op_on_cpu):
    """The stand-in's output and gradient are sdpa's, sequence by sequence, empty sequences skipped."""
    import torch.nn.functional as F
    from nt_sft.steps import _varlen_call

    torch.manual_seed(0)
    q, k, v = (torch.randn(10, h, 8, dtype=torch.float64, requires_grad=True) for h in (4, 2, 2))
    cu = torch.tensor([0, 4, 10, 10], dtype=torch.int32)
    out = _varlen_call(q, k, v, cu, 10, None)
    reference = torch.cat([F.scaled_dot_product_attention(*(x[a:b].transpose(0, 1) for x in (q, k, v)),
                                                          is_causal=True, enable_gqa=True).transpose(0, 1)
                           for a, b in ((0, 4), (4, 10))])
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), (q, k, v))
    expected = torch.autograd.grad((reference * weights).sum(), (q, k, v))
    assert torch.allclose(out, reference)
    assert all(torch.allclose(a, b) for a, b in zip(grads, expected))


@pytest.mark.filterwarnings("error::UserWarning")
def test_varlen_attention_compiles_without_a_graph_break():
    """torch.compile keeps PyTorch's own varlen op inside a compiled decoder layer's graph (a break would split
    every layer in two), and has nothing to warn of (it did of the signature lookup's functools cache). Traced on
    meta tensors through the op's fake kernel: its CUDA kernel cannot run here."""
    from nt_sft.steps import varlen_attention_forward

    query = torch.empty(1, 14, 16, 64, device="meta", dtype=torch.bfloat16)
    kv = torch.empty(1, 2, 16, 64, device="meta", dtype=torch.bfloat16)
    cu = torch.empty(3, dtype=torch.int32, device="meta")
    explained = torch._dynamo.explain(lambda q, k, v: varlen_attention_forward(
        None, q, k, v, None, scaling=0.125, cu_seq_lens_q=cu, max_length_q=11)[0])(query, kv, kv)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.parametrize("style", ["2.10", "2.12"])
def test_varlen_attention_keeps_packed_examples_apart(tiny, tokenizer, monkeypatch, style):
    """The `varlen` attention function (registered with transformers) on packed rows gives each example's
    logits alone and the gradient of padded batches, with the boundaries from the batch or from the position
    ids; GQA through either torch signature. The kernel itself is PyTorch's (CUDA): a reference stands in."""
    import torch.nn.attention.varlen as varlen_module
    from nt_sft.steps import register_varlen_attention
    from transformers import AutoModelForCausalLM

    calls: list = []
    monkeypatch.setattr(varlen_module, "varlen_attn", reference_varlen_attn(style, calls))
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32,
                                                 attn_implementation=register_varlen_attention()).eval()
    reference = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    examples = encoded_examples(tokenizer, tiny)[:5]
    two_rows = pack_batch([examples[:3], examples[3:]], tokenizer.pad_token_id, varlen=True)  # row 2 padded
    one_row = pack_batch([examples[:3], examples[3:]], tokenizer.pad_token_id, one_row=True)  # no boundaries
    with torch.no_grad():
        rows = model(**model_inputs(two_rows)).logits
        assert calls[-1] == two_rows["cu_seq_lens_q"].tolist()  # the batch's boundaries reached the kernel
        row = model(**model_inputs(one_row)).logits[0]
        alone = [reference(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in examples]
    starts = [0, *torch.tensor([len(e["input_ids"]) for e in examples]).cumsum(0).tolist()]
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        assert torch.allclose(row[starts[i] : starts[i] + n], alone[i], atol=1e-5), i
        r, start = (0, starts[i]) if i < 3 else (1, starts[i] - starts[3])
        assert torch.allclose(rows[r, start : start + n], alone[i], atol=1e-5), i

    accelerator = make_accelerator("no")
    model.train()

    def gradient(m, batches):
        m.zero_grad(set_to_none=True)
        backward_window(accelerator, m, batches)
        return torch.cat([p.grad.flatten() for p in m.parameters()])

    packs, capacity = packed(examples)
    g_varlen = gradient(model, [pack_batch(packs, tokenizer.pad_token_id, True, True)])
    g_padded = gradient(reference, [pad_batch(examples, tokenizer.pad_token_id)])
    assert torch.allclose(g_varlen, g_padded, rtol=1e-4, atol=1e-7), (g_varlen - g_padded).abs().max()
    # a compiled run's fixed layout: an all-padding pack and empty sequences after the last one
    layout = Layout.of(packs, len(packs) + 1, capacity)
    g_fixed = gradient(model, [pack_batch(packs, tokenizer.pad_token_id, True, True, layout)])
    assert calls[-1][-2:] == [calls[-1][-1]] * 2  # the boundaries reached the kernel with their empty sequences
    assert torch.allclose(g_fixed, g_padded, rtol=1e-4, atol=1e-7), (g_fixed - g_padded).abs().max()


def test_the_model_computed_loss_is_the_token_normalised_sum(tiny, tokenizer):
    """backward_window lets the model compute its loss (labels + num_items_in_batch: the path Liger's fused
    cross-entropy takes over), its head only at the positions that predict a target; its value is the summed
    token loss of the full logits over the window's target tokens."""
    from transformers import AutoModelForCausalLM

    accelerator = make_accelerator("no")
    model = accelerator.prepare(AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32))
    examples = encoded_examples(tokenizer, tiny)
    batches = [pack_batch([examples[:3]], tokenizer.pad_token_id), pad_batch(examples[3:], tokenizer.pad_token_id)]
    loss, targets = backward_window(accelerator, model, batches)
    with torch.no_grad():
        total = sum(token_loss_sum(model(**model_inputs(b)).logits, b["labels"]) for b in batches)
    assert targets == sum(b["targets"] for b in batches) == sum(
        sum(t != IGNORE for t in e["labels"][1:]) for e in examples)
    assert loss == pytest.approx(float(total) / targets, rel=1e-5)
    packed = batches[0]
    predicts = (packed["labels"][0, 1:] != IGNORE).nonzero().flatten()  # one row: exactly its target positions
    assert torch.equal(packed["logits_to_keep"], predicts) and len(predicts) < packed["input_ids"].size(1) - 1
    assert torch.equal(packed["shift_labels"][0], packed["labels"][0, 1:][predicts])
    with torch.no_grad():
        kept = model(**model_inputs(packed), logits_to_keep=packed["logits_to_keep"]).logits
    assert kept.shape[1] == len(predicts)  # no logits at prompt positions


def test_gpu_kernels_are_chosen_only_where_they_run(tiny):
    from nt_sft.trainer import attention_backend, use_liger
    from pydantic import ValidationError

    if torch.cuda.is_available():
        pytest.skip("checks the CPU defaults")
    assert attention_backend("auto") == "sdpa"
    with pytest.raises(ValueError, match="varlen needs a CUDA GPU"):
        attention_backend("varlen")
    assert use_liger("auto", tiny) is False and use_liger(False, tiny) is False
    with pytest.raises(ValueError, match="liger is true but Liger's kernels need a CUDA GPU"):
        use_liger(True, tiny)
    assert SFTTrainer(liger=True).settings.liger is True
    with pytest.raises(ValidationError):
        SFTTrainer(liger="sometimes")


def test_a_forward_with_defaults_runs_the_compiled_layers(tiny):
    """How the trainer gives Liger's fused cross-entropy its chunks: the forward still reaches the layers that
    Accelerate's regional compilation wraps (its model copy rebinds the method), and the default applies
    unless the caller overrides it. A forward closed over the original model ran uncompiled layers."""
    from accelerate.utils import compile_regions
    from nt_sft.steps import forward_with_defaults
    from torch._dynamo.utils import counters
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    forward_with_defaults(model, {"logits_to_keep": 1})
    compiled = compile_regions(model, backend="eager")
    ids = torch.tensor([[1, 5, 9, 4, 7]])
    graphs = counters["stats"]["unique_graphs"]
    assert compiled(ids).logits.shape[1] == 1
    assert counters["stats"]["unique_graphs"] > graphs
    assert compiled(ids, logits_to_keep=0).logits.shape[1] == 5


@pytest.mark.gpu
def test_varlen_kernel_and_liger_match_sdpa_on_a_gpu(tiny, tokenizer):
    """On CUDA: PyTorch's varlen kernel on packed rows matches sdpa on each example alone (bf16 autocast);
    Liger's layer kernels, and its fused linear cross-entropy in our chunks, give transformers' loss and
    gradient."""
    from types import SimpleNamespace

    from nt_sft.steps import (
        LIGER_CE_CHUNKS,
        apply_liger,
        liger_ce_chunking,
        liger_supported,
        register_varlen_attention,
        varlen_available,
    )
    from transformers import AutoModelForCausalLM

    if not varlen_available():
        pytest.skip("this GPU/torch has no working varlen kernel")
    packs, _ = packed(encoded_examples(tokenizer, tiny))
    batch = {k: v.cuda() if torch.is_tensor(v) else v
             for k, v in pack_batch(packs, tokenizer.pad_token_id, True, True).items()}
    varlen = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32,
                                                  attn_implementation=register_varlen_attention()).cuda()
    sdpa = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).cuda()
    accelerator = make_accelerator("bf16")
    varlen, sdpa = accelerator.prepare(varlen, sdpa)

    def gradient(m, batches):
        m.zero_grad(set_to_none=True)
        loss, _ = backward_window(accelerator, m, batches)
        return loss, torch.cat([p.grad.flatten() for p in m.parameters()])

    padded = {k: v.cuda() if torch.is_tensor(v) else v for k, v in pad_batch(examples, tokenizer.pad_token_id).items()}
    loss_v, g_v = gradient(varlen, [batch])
    loss_s, g_s = gradient(sdpa, [padded])
    assert loss_v == pytest.approx(loss_s, rel=2e-2)
    assert torch.nn.functional.cosine_similarity(g_v, g_s, dim=0) > 0.99

    if liger_supported("llama") is not None:
        pytest.skip(liger_supported("llama"))
    for fused_ce in (False, True):
        liger = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32,
                                                     attn_implementation=register_varlen_attention()).cuda()
        apply_liger(liger, fused_ce)
        liger = accelerator.prepare(liger)
        loss_l, g_l = gradient(liger, [batch])
        assert loss_l == pytest.approx(loss_v, rel=1e-2), fused_ce
        assert torch.nn.functional.cosine_similarity(g_l, g_v, dim=0) > 0.99, fused_ce
    # Qwen2.5-0.5B's head (151,936 x 896): about LIGER_CE_CHUNKS chunks of a pack, not Liger's 128 of 64 tokens
    const = liger_ce_chunking(SimpleNamespace(vocab_size=151936, hidden_size=896))["chunk_mem_const"]
    assert -(-151936 // (const * 896)) == LIGER_CE_CHUNKS



# --- a real SIGKILL ------------------------------------------------------------------------------

KILL_WORKER = """
import os, signal, sys
from pathlib import Path

import torch

sys.path.insert(0, {tests!r})
from test_sft import StopAfter, context, make_examples
from nt_sft.trainer import SFTTrainer

torch.set_num_threads(1)
tiny, work, steps, settings = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), eval(sys.argv[4])
# SIGKILL right after optimizer step n: no exception, no cleanup (the OOM killer's way)
kill = StopAfter(steps, lambda: os.kill(os.getpid(), signal.SIGKILL))
SFTTrainer(**settings).train(make_examples(8), tiny, context(work, kill))
"""


def test_a_sigkilled_packed_run_resumes_to_the_same_weights(tiny, tmp_path):
    """Packed training SIGKILLed in another process after step 5 (last checkpoint: step 3, mid-epoch) and
    resumed: the same steps, losses and weights as a run never interrupted."""
    import signal
    import subprocess
    import sys

    settings = dict(epochs=2, batch_size=1, packing=True, pack_length=160, max_length=160, lr=1e-3,
                    save_every_steps=3, seed=1)
    whole = SFTTrainer(**settings).train(make_examples(8), tiny, context(tmp_path / "whole"))
    assert whole["steps"] >= 8 and whole["packs"] < whole["examples"]  # several packs an epoch, kill mid-run

    worker = tmp_path / "worker.py"
    worker.write_text(KILL_WORKER.format(tests=str(Path(__file__).parent)))
    killed = subprocess.run([sys.executable, str(worker), tiny, str(tmp_path / "killed"), "5", repr(settings)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (tmp_path / "killed" / "scratch" / "checkpoint").exists()
    assert not (tmp_path / "killed" / "out" / "model").exists()
    resumed = SFTTrainer(**settings).train(make_examples(8), tiny, context(tmp_path / "killed"))

    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == whole["steps"]
    assert resumed["train_tokens"] == whole["train_tokens"]
    assert resumed["loss_curve"] == pytest.approx(whole["loss_curve"], rel=1e-5)
    wa, wb = weights(tmp_path / "whole" / "out" / "model"), weights(tmp_path / "killed" / "out" / "model")
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-6), name
    metrics = pq.read_table(tmp_path / "killed" / "out" / "metrics.parquet").to_pydict()  # kept in the checkpoint
    assert metrics["step"] == list(range(1, whole["steps"] + 1)) and metrics["loss"] == resumed["loss_curve"]
