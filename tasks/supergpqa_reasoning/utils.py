"""SuperGPQA reasoning preset: zero-shot multiple choice (up to A-J), letter after thinking."""

from nt_lmeval import reasoning

keep_all = reasoning.keep_all
process_results = reasoning.score_letter


def load(local_data=None, **_metadata):
    return reasoning.load_docs("supergpqa_reasoning", "m-a-p/SuperGPQA", "train", local_data=local_data)


def normalise(doc: dict) -> dict:
    return {"question_id": str(doc["uuid"]), "question": doc["question"], "options": list(doc["options"]),
            "answer": doc["answer_letter"], "discipline": doc.get("discipline", "")}


def process_docs(dataset):
    return dataset.map(normalise, remove_columns=dataset.column_names)


def doc_to_text(doc: dict) -> str:
    return reasoning.multiple_choice_prompt(doc["question"], doc["options"])
