"""Accuracy metrics of a quantized model against its float reference, and what they are called.

Pure numpy, computed in float64, so every benchmark and report measures the same thing the
same way. ``METRICS`` is the one table of how each metric is named for people: the report's
headings and legend and ``edgeq compare``'s text table all read it, so a metric cannot be
called two different things in two places.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MetricInfo:
    """How one metric (a key of ``CompareResult`` variant ``metrics``) is shown.

    ``label`` heads the report's table and plot axes, ``short`` fits the 15-character column of
    the ``edgeq compare`` text table, ``help`` is the report's one-line legend (empty: no legend
    entry), ``percent`` shows a 0..1 share as a percentage.
    """

    label: str
    short: str
    help: str = ""
    percent: bool = False


# In the order ``edgeq compare`` prints them.
METRICS: dict[str, MetricInfo] = {
    "cosine": MetricInfo("cosine", "cosine", "cosine similarity of the raw outputs with the reference's"),
    "sqnr_db": MetricInfo(
        "SQNR (dB)", "SQNR", "signal-to-quantization-noise ratio of the outputs, in dB (higher is better)"
    ),
    "top1_agreement": MetricInfo(
        "top-1 agreement", "top-1 agree", "share of samples whose top-1 class matches the reference", percent=True
    ),
    "top5_overlap": MetricInfo(
        "top-5 overlap", "top-5 overlap", "mean overlap of the top-5 classes with the reference's", percent=True
    ),
    "confident_top1_agreement": MetricInfo(
        "confident top-1",
        "top-1 (p>=0.5)",
        "top-1 agreement on samples where the reference is confident",
        percent=True,
    ),
    "confident_samples": MetricInfo("confident samples", "confident n"),
    "kl_divergence": MetricInfo(
        "KL divergence",
        "KL divergence",
        "KL divergence of the output distribution from the reference's (lower is better)",
    ),
    "embedding_cosine_mean": MetricInfo(
        "embedding cosine (mean)", "emb. cosine", "mean cosine of pooled sentence embeddings with the reference's"
    ),
    "embedding_cosine_p5": MetricInfo(
        "embedding cosine (p5)", "emb. cosine p5", "5th percentile of that cosine: the worst 5% of sentences"
    ),
    # Language models (edgeq.evaluate.decoder): perplexity is the model's own, the rest against the reference.
    "perplexity": MetricInfo(
        "perplexity", "perplexity", "exp of the mean negative log-likelihood of the held-out text's next tokens (lower is better)"
    ),
    "perplexity_ratio": MetricInfo("perplexity / ref", "ppl / ref", "perplexity relative to the reference's"),
    "next_token_agreement": MetricInfo(
        "next-token agreement", "next-token agr.", "share of positions whose most likely next token matches the reference's",
        percent=True,
    ),
    "greedy_agreement": MetricInfo(
        "greedy agreement", "greedy agree",
        "share of greedily generated tokens equal to the reference's at the same position", percent=True,
    ),
    "greedy_first_divergence": MetricInfo(
        "first divergence", "1st divergence", "mean index of the first generated token that differs from the reference's"
    ),
}

METRIC_LABELS: dict[str, str] = {key: info.label for key, info in METRICS.items()}
METRIC_SHORT_LABELS: dict[str, str] = {key: info.short for key, info in METRICS.items()}
METRIC_HELP: dict[str, str] = {key: info.help for key, info in METRICS.items() if info.help}
PERCENT_METRICS: frozenset[str] = frozenset(key for key, info in METRICS.items() if info.percent)


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(|ref|^2 / |ref - cand|^2)."""
    ref = np.asarray(reference, np.float64).ravel()
    err = ref - np.asarray(candidate, np.float64).ravel()
    noise = float(np.dot(err, err))
    signal = float(np.dot(ref, ref))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows (last axis is the feature axis)."""
    a64 = np.asarray(a, np.float64).reshape(-1, np.shape(a)[-1])
    b64 = np.asarray(b, np.float64).reshape(-1, np.shape(b)[-1])
    num = np.sum(a64 * b64, axis=1)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    out = np.ones_like(num)
    nonzero = den > 0
    out[nonzero] = num[nonzero] / den[nonzero]
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two tensors taken as flat vectors."""
    return float(cosine_rows(np.ravel(a)[None, :], np.ravel(b)[None, :])[0])


def masked_mean_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Sentence embedding as sentence-transformers computes it: mean over unmasked tokens."""
    mask = np.asarray(attention_mask, np.float64)[..., None]
    summed = np.sum(np.asarray(hidden, np.float64) * mask, axis=1)
    return summed / np.maximum(mask.sum(axis=1), 1e-9)


def top1_agreement(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> float:
    ref = np.asarray(reference_logits).reshape(-1, np.shape(reference_logits)[-1])
    cand = np.asarray(candidate_logits).reshape(-1, np.shape(candidate_logits)[-1])
    return float(np.mean(ref.argmax(axis=1) == cand.argmax(axis=1)))


def topk_overlap(reference_logits: np.ndarray, candidate_logits: np.ndarray, k: int = 5) -> float:
    """Mean fraction of the reference's top-k classes that are also in the candidate's top-k."""
    ref = np.asarray(reference_logits).reshape(-1, np.shape(reference_logits)[-1])
    cand = np.asarray(candidate_logits).reshape(-1, np.shape(candidate_logits)[-1])
    ref_top = np.argsort(-ref, axis=1)[:, :k]
    cand_top = np.argsort(-cand, axis=1)[:, :k]
    hits = [len(set(r) & set(c)) / k for r, c in zip(ref_top, cand_top, strict=True)]
    return float(np.mean(hits))


def softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def kl_divergence(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> float:
    """Mean KL(P_ref || P_cand) of the softmax distributions, in nats."""
    p = softmax(reference_logits)
    q = softmax(candidate_logits)
    return float(np.mean(np.sum(p * (np.log(np.maximum(p, 1e-300)) - np.log(np.maximum(q, 1e-300))), axis=-1)))


def confident_top1_agreement(reference_logits: np.ndarray, candidate_logits: np.ndarray, threshold: float = 0.5) -> tuple[float, int]:
    """Top-1 agreement on samples where the reference is confident (max probability >= threshold).

    Low-confidence predictions flip on tiny perturbations, so this separates real damage from
    noise. Returns (agreement, number of confident samples).
    """
    ref = np.asarray(reference_logits).reshape(-1, np.shape(reference_logits)[-1])
    cand = np.asarray(candidate_logits).reshape(-1, np.shape(candidate_logits)[-1])
    confident = softmax(ref).max(axis=1) >= threshold
    if not confident.any():
        return float("nan"), 0
    return top1_agreement(ref[confident], cand[confident]), int(confident.sum())


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, in float64."""
    x = np.asarray(logits, np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))


@dataclass
class NextTokenSums:
    """Teacher-forced next-token statistics of a candidate LM and its reference, as running sums.

    ``tokens`` predictions were scored; ``*_nll`` are summed negative log-likelihoods of the true
    next token (nats), ``top1_matches`` counts predictions whose argmax equals the reference's,
    ``kl`` sums KL(P_ref || P_cand) per prediction. Sums, so chunks and sequences simply add up.
    """

    tokens: int = 0
    reference_nll: float = 0.0
    candidate_nll: float = 0.0
    top1_matches: int = 0
    kl: float = 0.0

    def add(self, reference_logits: np.ndarray, candidate_logits: np.ndarray, targets: np.ndarray, block: int = 64) -> None:
        """Score ``[..., vocab]`` logits against ``targets`` (same leading shape), ``block`` rows at a time
        (a 50k-token vocabulary in float64 is 400 KB a row)."""
        vocab = np.shape(reference_logits)[-1]
        ref = np.asarray(reference_logits).reshape(-1, vocab)
        cand = np.asarray(candidate_logits).reshape(-1, vocab)
        tgt = np.asarray(targets, np.int64).reshape(-1)
        for lo in range(0, tgt.size, block):
            r = log_softmax(ref[lo : lo + block])
            c = log_softmax(cand[lo : lo + block])
            rows = np.arange(r.shape[0])
            t = tgt[lo : lo + block]
            self.reference_nll -= float(r[rows, t].sum())
            self.candidate_nll -= float(c[rows, t].sum())
            self.top1_matches += int(np.sum(r.argmax(axis=1) == c.argmax(axis=1)))
            self.kl += float(np.sum(np.exp(r) * (r - c)))
        self.tokens += int(tgt.size)


def perplexity(nll_sum: float, tokens: int) -> float:
    """exp(mean negative log-likelihood per token)."""
    return float(np.exp(nll_sum / tokens)) if tokens else float("nan")


def greedy_agreement(reference_tokens: np.ndarray, candidate_tokens: np.ndarray) -> tuple[float, float]:
    """Two greedy generations [prompts, new_tokens] compared: (share of positions with the same
    token, mean index of the first differing token, which is ``new_tokens`` when none differs)."""
    ref = np.asarray(reference_tokens)
    cand = np.asarray(candidate_tokens)
    same = ref == cand
    first = np.where(same.all(axis=1), ref.shape[1], np.argmin(same, axis=1))
    return float(same.mean()), float(first.mean())
