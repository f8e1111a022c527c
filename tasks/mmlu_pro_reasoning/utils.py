"""MMLU-Pro reasoning preset: zero-shot multiple choice (A-J), letter after thinking."""

from nt_lmeval import reasoning

keep_all = reasoning.keep_all
process_results = reasoning.score_letter


def load(local_data=None, **_metadata):
    return reasoning.load_docs("mmlu_pro_reasoning", "TIGER-Lab/MMLU-Pro", "test", local_data=local_data)


def normalise(doc: dict) -> dict:
    options = [o for o in doc["options"] if str(o).strip() != "N/A"]  # a few rows pad with "N/A"
    return {"question_id": str(doc["question_id"]), "question": doc["question"], "options": options,
            "answer": doc["answer"], "category": doc.get("category", "")}


def process_docs(dataset):
    return dataset.map(normalise, remove_columns=dataset.column_names)


def doc_to_text(doc: dict) -> str:
    return reasoning.multiple_choice_prompt(doc["question"], doc["options"])
