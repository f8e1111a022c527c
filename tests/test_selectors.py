"""Selectors on hand-built pools: each rule, its reasons, determinism by seed."""

import pyarrow as pa
import pytest

from nt_modelfree.annotators import LengthAnnotator
from nt_modelfree.selectors import RandomSelector
from nt_naturalthoughts.selectors import DisagreeSelector
from nt_harness.records import SELECTION
from nt_limo.selector import LimoSelector, chain_scores
from conftest import kept_ids


def pool(n_questions=10, n=2, **columns):
    rows = n_questions * n
    base = {
        "trace_id": [f"q{i // n}/{i % n}" for i in range(rows)],
        "question_id": [f"q{i // n}" for i in range(rows)],
        "thinking": ["let me think"] * rows,
        "answer": ["<answer>1</answer>"] * rows,
        "complete": [True] * rows,
        "completion_tokens": list(range(rows)),
    }
    base.update(columns)
    return pa.table(base)


def test_random_keeps_one_complete_trace_per_question_deterministically(ctx):
    p = pool(complete=[i % 4 != 0 for i in range(20)])
    a = RandomSelector().select(p, 6, seed=1, ctx=ctx)
    assert a.schema.equals(SELECTION)
    chosen = kept_ids(a)
    assert len(chosen) == 6 and len({t.split("/")[0] for t in chosen}) == 6
    incomplete = {f"q{i // 2}/{i % 2}" for i in range(20) if i % 4 == 0}
    assert not incomplete & set(chosen)
    reasons = dict(zip(a.column("trace_id").to_pylist(), a.column("reason").to_pylist()))
    assert all(reasons[t] == "dropped: incomplete" for t in incomplete)
    assert kept_ids(RandomSelector().select(p, 6, seed=1, ctx=ctx)) == chosen
    assert kept_ids(RandomSelector().select(p, 6, seed=2, ctx=ctx)) != chosen
    ranks = sorted(r for r in a.column("rank").to_pylist() if r >= 0)
    assert ranks == list(range(6))


def test_disagree_by_the_verifier_keeps_verified_traces_the_system1_model_gets_wrong(ctx):
    """The `naturalthoughts:disagree-verified` variant (ours): graded disagreement, correct teacher only."""
    correct = [1.0, 0.0] * 10  # sample 0 of every question is right
    system1 = [0.0] * 8 + [1.0] * 12  # questions q0..q3 are missed by the System-1 model
    p = pool(correct=correct, system1_correct=system1)
    verified = {"by": "verifier", "require_correct": True}
    sel = DisagreeSelector(fill=False, **verified).select(p, 10, seed=0, ctx=ctx)
    assert sorted(kept_ids(sel)) == ["q0/0", "q1/0", "q2/0", "q3/0"]
    reasons = dict(zip(sel.column("trace_id").to_pylist(), sel.column("reason").to_pylist()))
    assert reasons["q0/1"] == "dropped: teacher answer wrong"
    assert reasons["q5/0"] == "dropped: models agree"
    filled = DisagreeSelector(**verified).select(p, 10, seed=0, ctx=ctx)
    assert len(kept_ids(filled)) == 10
    fill_reasons = [r for r, k in zip(filled.column("reason").to_pylist(), filled.column("kept").to_pylist()) if k]
    assert fill_reasons.count("kept: models disagree") == 4 and fill_reasons.count("kept: fill (random)") == 6


def test_disagree_by_default_is_the_papers_rule_the_judges_verdict_and_no_correctness_filter(ctx):
    """NaturalThoughts §3.2/§4.2: a judge decides whether R1's and the System-1 answers agree; wrong
    teacher answers are not filtered out."""
    sel = DisagreeSelector(fill=False)
    assert sel.requires == ("models_agree",)
    p = pool(4, n=1, models_agree=[1.0, 0.0, None, 0.0], correct=[1.0, 1.0, 1.0, 0.0])
    out = sel.select(p, 10, seed=0, ctx=ctx)
    assert sorted(kept_ids(out)) == ["q1/0", "q3/0"]  # q3's teacher answer is wrong and still kept
    reasons = dict(zip(out.column("trace_id").to_pylist(), out.column("reason").to_pylist()))
    assert reasons["q0/0"] == "dropped: models agree" and reasons["q2/0"] == "dropped: not judged"


def test_limo_chain_score_follows_its_weights():
    texts = pa.array([
        "so the answer is 4",
        "let me check and verify this, perhaps it might be 4; therefore since 2+2 is 4 the answer is 4",
        "word " * 40,
    ])
    s = chain_scores(texts)
    assert s[1] > s[0]  # verification, tentative and connective words all count
    assert s[2] == pytest.approx(0.30)  # longest text, no marker words: only the 30 % length share


def test_limo_keeps_hard_but_solvable_questions_first(ctx):
    # q0: 1/4 correct (hard), q1: 4/4 (easy), q2: 0/4 (unsolved), q3: 2/4 (hard)
    correct = [1, 0, 0, 0] + [1, 1, 1, 1] + [0, 0, 0, 0] + [1, 1, 0, 0]
    thinking = ["wait, let me verify: therefore x"] * 16
    thinking[12] = "short"
    p = pool(4, 4, correct=[float(c) for c in correct], thinking=thinking)
    sel = LimoSelector(fill=False).select(p, 4, seed=0, ctx=ctx)
    chosen = kept_ids(sel)
    assert sorted(t.split("/")[0] for t in chosen) == ["q0", "q3"]
    assert "q3/1" in chosen  # the better-scored of q3's two correct chains
    filled = LimoSelector().select(p, 4, seed=0, ctx=ctx)
    reasons = {t.split("/")[0]: r for t, r, k in zip(*(filled.column(c).to_pylist() for c in ("trace_id", "reason", "kept"))) if k}
    assert reasons == {
        "q0": "kept: hard and solvable, top chain score",
        "q3": "kept: hard and solvable, top chain score",
        "q1": "kept: fill (best chain of an easy question)",
        "q2": "kept: fill (best unverified chain)",  # no correct chain: only to keep budgets equal
    }


def test_length_counts_in_the_teachers_tokens_where_the_pool_has_them(ctx, resolve):
    """The `long` selector's l: the teacher's reasoning_tokens where the pool has them (the answer is the rest of
    its completion), a tokenizer's count of the text elsewhere; the stats say which rows came from which."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve("tiny-llama"))
    n_thinking, n_answer = (len(tok(t, add_special_tokens=False)["input_ids"])
                            for t in ("let me think", "<answer>1</answer>"))
    ctx.resolve_model = resolve
    p = pool(2, completion_tokens=[10, 10, 5, 10], reasoning_tokens=pa.array([7, None, 0, None], pa.int32()))
    out = LengthAnnotator(tokenizer="tiny-llama").annotate(p, ctx)
    assert out.column("thinking_tokens").to_pylist() == [7, n_thinking, 0, n_thinking]
    assert out.column("answer_tokens").to_pylist() == [3, n_answer, 5, n_answer]
    assert ctx.stats["counted_by"] == {"teacher": 2, "tokenizer tiny-llama": 2}
    assert ctx.stats["summary"] == "lengths in teacher tokens (2), else tiny-llama tokens (2)"

    ctx.stats.clear()
    out = LengthAnnotator(tokenizer="tiny-llama", count="tokenizer").annotate(p, ctx)
    assert out.column("thinking_tokens").to_pylist() == [n_thinking] * 4
    assert ctx.stats["counted_by"] == {"teacher": 0, "tokenizer tiny-llama": 4}
    assert ctx.stats["summary"] == "lengths in tiny-llama tokens"

    ctx.stats.clear()
    ctx.resolve_model = None  # every row has the teacher's count: no tokenizer is loaded
    out = LengthAnnotator().annotate(p.filter(pa.array([True, False, True, False])), ctx)
    assert out.column("thinking_tokens").to_pylist() == [7, 0]
    assert ctx.stats["counted_by"] == {"teacher": 2, "tokenizer smollm2": 0}
    assert ctx.stats["summary"] == "lengths in teacher tokens"
