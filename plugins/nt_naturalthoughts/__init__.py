"""NaturalThoughts (Li et al. 2025, arXiv 2507.01921): which R1 traces to distil, as recipes.

Selectors (§3.2): disagree (the paper's best), long, topic-uniform, cluster-uniform, verbosity, short-reference,
strategy-diverse, compose, mix; the annotators `judge` (do the two models' answers agree?), `embed` (question
clusters) and the LLM labellers; the `natural_reasoning` source; and the recipes of the paper's selection and
System-1/System-2 mixing experiments.
"""

import nt_harness
from nt_harness.recipes import Recipe
from nt_naturalthoughts.annotators import EmbedAnnotator, build_minilm
from nt_naturalthoughts.prompted import JudgeAnnotator, StrategiesAnnotator, TopicAnnotator, VerbosityAnnotator
from nt_naturalthoughts.selectors import (
    ClusterUniformSelector,
    ComposeSelector,
    DisagreeSelector,
    MixSelector,
    LongSelector,
    ShortReferenceSelector,
    StrategyDiverseSelector,
    TopicUniformSelector,
    VerbositySelector,
)
from nt_naturalthoughts.source import NaturalReasoningSource

LENGTH = {"name": "length"}
# Models-disagree as the paper decides it (§3.2, §4.2): a judge (Llama-3.1-8B-Instruct) is asked whether R1's answer
# and the System-1 answer (Llama-3.3-70B-Instruct's, recorded in NaturalReasoning) agree; no correctness filter.
# The `judge` annotator lets graded answers decide where grades settle it (ours: exact where a verifier exists;
# `use_verifier = false` asks the judge every time, as the paper).
DISAGREE_ANNOTATORS = [{"name": "verify"}, {"name": "system1"}, {"name": "judge"}, LENGTH]
DISAGREE = {"annotators": DISAGREE_ANNOTATORS, "selector": {"name": "disagree"}}
# Ours, not the paper's: disagreement by the verifier's grades, and only traces whose own answer is right.
DISAGREE_VERIFIED = {"annotators": [{"name": "verify"}, {"name": "system1"}, LENGTH],
                     "selector": {"name": "disagree", "by": "verifier", "require_correct": True}}
RANDOM = {"annotators": [LENGTH], "selector": {"name": "random"}}

STRATEGY = {"annotators": [LENGTH, {"name": "strategies"}], "selector": {"name": "strategy-diverse"}}
VERBOSITY_HIGH = {"annotators": [LENGTH, {"name": "verbosity"}], "selector": {"name": "verbosity", "level": "high"}}


def mixed(mix: dict, annotators: list[dict]) -> dict:
    """Mixing runs train on a random selection: difficulty mixing needs agree and disagree examples both."""
    return {"annotators": annotators, "selector": {"name": "mix", "select": {"name": "random"}, **mix}}


@nt_harness.hookimpl
def register_sources(register):
    register(NaturalReasoningSource)


@nt_harness.hookimpl
def register_annotators(register):
    for cls in (EmbedAnnotator, TopicAnnotator, StrategiesAnnotator, VerbosityAnnotator,
                JudgeAnnotator):
        register(cls)


@nt_harness.hookimpl
def register_models(register):
    register("all-minilm-l6-v2", build_minilm)  # a real sentence encoder for `embed`, from a PyPI wheel


@nt_harness.hookimpl
def register_selectors(register):
    for cls in (DisagreeSelector, LongSelector, TopicUniformSelector, ClusterUniformSelector, VerbositySelector,
                ShortReferenceSelector, StrategyDiverseSelector, ComposeSelector, MixSelector):
        register(cls)


@nt_harness.hookimpl
def register_recipes(register):
    # The paper's best selection at 10k-100k examples is "models disagree" (arXiv 2507.01921 §3.2, Table 1):
    # questions where a System-1 answer (Llama-3.3-70B, no thinking) differs from R1's, as a judge decides.
    register(Recipe("naturalthoughts", "NaturalThoughts' best: traces whose answer a System-1 model's answer "
                                       "disagrees with, as a judge decides; no correctness filter (§3.2)", DISAGREE))
    register(Recipe("naturalthoughts:disagree", "models-disagree selection (same as `naturalthoughts`)", DISAGREE))
    register(Recipe("naturalthoughts:disagree-verified",
                    "ours, not the paper's: the System-1 answer is graded wrong and the teacher's graded right "
                    "(needs a verifier for every question)", DISAGREE_VERIFIED))
    register(Recipe("naturalthoughts:random", "NaturalThoughts' random-selection baseline", RANDOM))
    register(Recipe("naturalthoughts:topic", "uniform over question topics, LLM-labelled where the source has none (§3.2)",
                    {"annotators": [LENGTH, {"name": "topic"}], "selector": {"name": "topic-uniform"}}))
    register(Recipe("naturalthoughts:strategy", "traces with 4-8 distinct LLM-labelled reasoning strategies (§3.2)",
                    STRATEGY))
    register(Recipe("naturalthoughts:verbosity-high", "the most verbose traces, LLM-rated 7-10 of 10 (§3.2)",
                    VERBOSITY_HIGH))
    register(Recipe("naturalthoughts:cluster", "uniform over k-means clusters of question embeddings (§3.2)",
                    {"annotators": [LENGTH, {"name": "embed"}], "selector": {"name": "cluster-uniform"}}))
    register(Recipe("naturalthoughts:long", "length-biased: keep with p = (l/5000)^2.5 (§3.2), fill to budget",
                    {"annotators": [LENGTH], "selector": {"name": "long"}}))
    register(Recipe("naturalthoughts:short-ref", "easy to verify: questions with short reference answers (§3.2)",
                    {"annotators": [LENGTH], "selector": {"name": "short-reference"}}))
    # Mixed System-1/System-2 distillation (Table 4): p is the share of System-2 (full-trace) examples.
    for p in (0.2, 0.4, 0.6):
        register(Recipe(f"naturalthoughts:mix-random-{p}",
                        f"random selection, each example System-2 with probability {p}, else answer only (Table 4)",
                        mixed({"mode": "random", "p": p}, [LENGTH])))
    register(Recipe("naturalthoughts:mix-difficulty",
                    "random selection; System-2 where the models disagree, answer only elsewhere (Table 4)",
                    mixed({"mode": "difficulty"}, DISAGREE_ANNOTATORS)))
