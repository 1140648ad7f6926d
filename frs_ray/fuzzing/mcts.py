"""MCTS fuzzing: vulnerable-area identification, Sec. 4.3.1 of the FRS paper (Eq. 6-9).

In TextAttack's terms: the *goal* is the KL deviation of Eq. 8, the *transformation* is one DL operation of M
applied to every token of a segment, and the *search* is Monte Carlo tree search over segments.

- The tree's root is the whole text x' (all tokens), with V(root) = 0.
- Selection (Eq. 6): from the root, repeatedly take the child with the highest UCB score (unvisited first)
  until reaching a node that has not been expanded.
- Expansion (Eq. 7): the node's segment [i, j) is subdivided at its best split point k (linguistic
  boundaries near the middle first, see ``frs_ray.text.segment``) into the children [i, k) and [k, j).
  Decision: both halves are created at once (they are the two outcomes of Eq. 7 for the same k) and
  simulated in the same model call; each node is split at one point only, which makes the tree a binary
  search that reaches single tokens in about log2(L) queries. A node that cannot be split (one token) is
  re-simulated instead.
- Simulation (Eq. 8): each new node gets ``rollouts`` variants x~ = m(segment), with m drawn from M with the
  configured weights and applied to every token of the segment; its score is E = KL(P(y|x~) || P(y|x')).
- Backpropagation (Eq. 9): every node from the new node up to the root updates its running mean.

Budget. One iteration = exactly one model query: a single batched call that scores all variants of that
iteration (and, in the first iteration, x' itself). ``budget`` iterations make exactly ``budget`` calls per
text; ``fuzz_many`` advances many texts in lock-step so one call serves all of them.
The model queried is the smoothed centre model Clip_rho(theta), without voter noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..config import FuzzConfig
from ..text import apply_operation, render, split_points, tokenize
from ..text.tokens import Token

PredictFn = Callable[[Sequence[str]], np.ndarray]


def ucb_score(value: float, visits: int, parent_visits: int, exploration: float) -> float:
    """Eq. 6: UCB(n) = V(n) + C sqrt(ln N_parent / N_n); +inf for an unvisited node."""
    if visits == 0:
        return math.inf
    return value + exploration * math.sqrt(math.log(max(parent_visits, 1)) / visits)


def kl_deviation(p_mutated: np.ndarray, p_reference: np.ndarray, eps: float = 1e-12) -> float:
    """Eq. 8: E(x~, x') = D_KL(P_f(y|x~) || P_f(y|x')) in nats."""
    p = np.clip(np.asarray(p_mutated, dtype=np.float64), eps, 1.0)
    q = np.clip(np.asarray(p_reference, dtype=np.float64), eps, 1.0)
    return float(np.sum(p * (np.log(p) - np.log(q))))


def running_mean_update(value: float, visits: int, score: float) -> float:
    """Eq. 9: V_i(n) = (N_n - 1)/N_n V_{i-1}(n) + E/N_n, with ``visits`` = N_n after counting this visit."""
    return (visits - 1) / visits * value + score / visits


def mutate_segment(tokens: Sequence[str], start: int, end: int, op: str, filler: str) -> list[str]:
    """Apply DL operation ``op`` to every token of segment ``[start, end)`` (the m(n_new) of Step 3).

    Deletion removes the segment, substitution masks it, insertion puts a filler before each of its tokens,
    transposition swaps its tokens pairwise (a one-token segment swaps with its neighbour).
    """
    out = list(tokens)
    if op == "deletion":
        return out[:start] + out[end:]
    if op == "substitution":
        return out[:start] + [filler] * (end - start) + out[end:]
    if op == "insertion":
        seg: list[str] = []
        for t in out[start:end]:
            seg += [filler, t]
        return out[:start] + seg + out[end:]
    if op == "transposition":
        if end - start == 1:
            return apply_operation(out, start, "transposition", filler)
        for i in range(start, end - 1, 2):
            out[i], out[i + 1] = out[i + 1], out[i]
        return out
    raise ValueError(f"unknown mutation operation {op!r}")


@dataclass
class Node:
    """A tree node: the token segment ``[start, end)`` of x', its score V(n) and visit count N(n)."""

    start: int
    end: int
    parent: "Node | None" = None
    children: list["Node"] = field(default_factory=list)
    visits: int = 0
    value: float = 0.0
    expanded: bool = False

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Span:
    """A vulnerable area: token span, character offsets into the original text, its text and score V(n)."""

    token_start: int
    token_end: int
    start: int
    end: int
    text: str
    score: float
    visits: int

    def to_dict(self) -> dict:
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "score": round(self.score, 6),
            "tokens": [self.token_start, self.token_end],
            "visits": self.visits,
        }


@dataclass
class FuzzResult:
    """Output of fuzzing one text: ranked spans (best first), the reference distribution, queries used."""

    text: str
    tokens: list[Token]
    spans: list[Span]
    reference: np.ndarray
    queries: int

    def vulnerable(self, n: int, disjoint: bool = False) -> list[Span]:
        """T(x'): the ``n`` best spans; with ``disjoint``, the ``n`` best that share no token with a better one.

        Decision (the paper says "the top-H segments"): the search tree's nodes nest, so the second-best span is
        often the best one's parent or child, and the top H then cover one area of the text. ``disjoint`` walks
        the ranking and skips every span overlapping one already taken, so H spans mark H separate areas (as a
        trigger of several words at separate positions needs). With n = 1 both are the best span."""
        if not disjoint:
            return self.spans[:n]
        out: list[Span] = []
        for sp in self.spans:
            if len(out) == n:
                break
            if all(sp.token_end <= o.token_start or sp.token_start >= o.token_end for o in out):
                out.append(sp)
        return out


class _TextSearch:
    """MCTS state of one text; ``propose`` gives this iteration's variants, ``absorb`` their probabilities."""

    def __init__(self, text: str, config: FuzzConfig, filler: str, rng: np.random.Generator) -> None:
        self.text, self.config, self.filler, self.rng = text, config, filler, rng
        self.tokens = tokenize(text)
        self.words = [t.text for t in self.tokens]
        self.root = Node(0, len(self.words))
        self.nodes: list[Node] = [self.root]
        self.reference: np.ndarray | None = None
        self.queries = 0
        self._pending: list[Node] = []
        ops = config.mutations.as_items()
        self._ops = [o for o, _ in ops]
        self._probs = np.array([w for _, w in ops])

    def _select(self) -> Node:
        node = self.root
        while node.expanded and node.children:
            node = max(node.children, key=lambda c: ucb_score(c.value, c.visits, node.visits, self.config.exploration))
        return node

    def _expand(self, node: Node) -> list[Node]:
        node.expanded = True
        points = split_points(self.words, node.start, node.end)
        if not points:
            return [node]
        k = points[0]
        node.children = [Node(node.start, k, node), Node(k, node.end, node)]
        self.nodes += node.children
        return node.children

    def propose(self) -> list[str]:
        """Variants to score in this iteration (x' first in the first iteration)."""
        if not self.words:
            self._pending = []
            return [self.text] if self.reference is None else []
        leaf = self._select()
        self._pending = self._expand(leaf) if not leaf.expanded else [leaf]
        op = self._ops[int(self.rng.choice(len(self._ops), p=self._probs))]
        variants = [
            render(mutate_segment(self.words, n.start, n.end, op, self.filler))
            for n in self._pending
            for _ in range(self.config.rollouts)
        ]
        if self.reference is None:
            variants = [render(self.words)] + variants
        return variants

    def absorb(self, probs: np.ndarray) -> None:
        self.queries += 1
        if self.reference is None:
            self.reference, probs = probs[0], probs[1:]
        r = self.config.rollouts
        for i, node in enumerate(self._pending):
            for score in (kl_deviation(p, self.reference) for p in probs[i * r : (i + 1) * r]):
                n: Node | None = node
                while n is not None:
                    n.visits += 1
                    n.value = running_mean_update(n.value, n.visits, score)
                    n = n.parent

    def result(self) -> FuzzResult:
        ranked = sorted(
            (n for n in self.nodes if n.visits > 0 and (n is not self.root or len(self.nodes) == 1)),
            key=lambda n: (-n.value, n.length, n.start),
        )
        spans = []
        for n in ranked:
            if n.length == 0:
                continue
            s, e = self.tokens[n.start].start, self.tokens[n.end - 1].end
            spans.append(Span(n.start, n.end, s, e, self.text[s:e], n.value, n.visits))
        ref = self.reference if self.reference is not None else np.array([])
        return FuzzResult(self.text, self.tokens, spans, ref, self.queries)


class MCTSFuzzer:
    """Finds the spans of a text whose mutation moves the model's output most (T(x') of Sec. 4.3.1).

    Args:
        predict: batched ``texts -> probabilities`` of the (centre) model.
        config: :class:`~frs_ray.config.FuzzConfig` (budget, exploration C, rollouts, mutation weights).
        filler: token used by insertion and substitution.

    Example::

        fuzzer = MCTSFuzzer(backend.predict_proba, FuzzConfig(budget=10), filler="[MASK]")
        result = fuzzer.fuzz("it 's a mn charming journey .", seed=0)
        result.spans[0].text   # 'mn' when the model is backdoored on 'mn'
    """

    def __init__(self, predict: PredictFn, config: FuzzConfig | None = None, filler: str = "[MASK]") -> None:
        self.predict = predict
        self.config = config or FuzzConfig()
        self.filler = filler

    def fuzz(self, text: str, seed: int = 0) -> FuzzResult:
        return self.fuzz_many([text], seeds=[seed])[0]

    def fuzz_many(self, texts: Sequence[str], seeds: Sequence[int] | None = None) -> list[FuzzResult]:
        """Fuzz all texts in lock-step: ``budget`` model calls in total, each serving every text."""
        return self.fuzz_at_budgets(texts, seeds, [self.config.budget])[self.config.budget]

    def fuzz_at_budgets(
        self, texts: Sequence[str], seeds: Sequence[int] | None, budgets: Sequence[int]
    ) -> dict[int, list[FuzzResult]]:
        """Results after each of ``budgets`` iterations from ONE search of max(budgets) iterations.

        The state after b iterations is exactly that of a search with budget b (same seeds, same draws), so
        one run gives the spans for every budget of an Appendix I style study.
        """
        if any(b < 0 for b in budgets):
            raise ValueError(f"budgets must be >= 0, got {list(budgets)}")
        seeds = list(seeds) if seeds is not None else list(range(len(texts)))
        searches = [_TextSearch(t, self.config, self.filler, np.random.default_rng(s)) for t, s in zip(texts, seeds)]
        out: dict[int, list[FuzzResult]] = {}
        if 0 in budgets:  # no search; one call for the reference distribution only
            probs = self.predict([render(s.words) or s.text for s in searches]) if searches else np.empty((0, 0))
            out[0] = []
            for s, p in zip(searches, probs):
                s.reference = p
                out[0].append(s.result())
            for s in searches:
                s.reference = None
        for it in range(1, max(budgets, default=0) + 1):
            batches = [s.propose() for s in searches]
            flat = [v for b in batches for v in b]
            probs = self.predict(flat) if flat else np.empty((0, 0))
            offset = 0
            for s, b in zip(searches, batches):
                if b:
                    s.absorb(probs[offset : offset + len(b)])
                offset += len(b)
            if it in budgets:
                out[it] = [s.result() for s in searches]
        return out
