"""GPQA-Diamond reasoning preset: options shuffled with a fixed seed, letter after thinking."""

from nt_lmeval import reasoning

OPTION_SEED = 0  # fixed, so every checkpoint sees the same option order
keep_all = reasoning.keep_all
process_results = reasoning.score_letter


def load(local_data=None, **_metadata):
    return reasoning.load_docs(
        "gpqa_diamond_reasoning", "Idavidrein/gpqa", "train", hub_name="gpqa_diamond", local_data=local_data
    )


def _clean(text) -> str:
    """GPQA's own cleanup (as lm-eval's gpqa tasks): stray title markers and double spaces."""
    return str(text).strip().replace(" [title]", ". ").replace("  ", " ")


def shuffle(doc: dict) -> dict:
    question = _clean(doc["Question"])
    incorrect = [_clean(doc[f"Incorrect Answer {i}"]) for i in (1, 2, 3)]
    correct = _clean(doc["Correct Answer"])
    options, letter = reasoning.shuffled_options(question, correct, incorrect, OPTION_SEED)
    key = doc.get("Record ID") or question[:64]
    return {"question_id": str(key), "question": question, "options": options, "answer": letter}


def process_docs(dataset):
    return dataset.map(shuffle, remove_columns=dataset.column_names)


def doc_to_text(doc: dict) -> str:
    return reasoning.multiple_choice_prompt(doc["question"], doc["options"])
