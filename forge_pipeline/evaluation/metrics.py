"""Every quality metric of the nightly loop, defined once (pure functions: numbers and text in, numbers out).

Definitions:

- **eval loss**: mean negative log-likelihood (nats per token) of the assistant tokens of each eval
  conversation — the trained completion, including its end-of-turn token — given everything before them,
  token-weighted over the eval split, with every model fed the same token ids (the training tokenizer's
  template), truncated to the training max_seq_length. Lower is better. A model whose vocabulary differs
  from the candidate's (a live model of another base family) is not scored: the ids mean other tokens there.
- **fidelity KLD**: mean over the same assistant-token positions of KL(P_trained || P_served), where
  P_trained is the next-token distribution of the trained model in Hugging Face form (base + LoRA, float32)
  and P_served that of the served file (GGUF, or base GGUF + LoRA GGUF) through llama.cpp. It is zero for
  a perfect export. Perplexity ratios can hide errors that cancel out; KLD cannot. When the trainer wrote
  its reference logits (evaluation/reference_logits.py: the top 64 log-probs per answer position and the log
  of the remaining mass, from the model in memory at the end of training), P_trained is known only on that
  partition {each top-64 token, the rest as one bucket}, and the KLD is that of both distributions grouped the
  same way: sum_top p (log p - log q) + p_rest (log p_rest - log q_rest). Grouping never increases a KL
  (log-sum inequality), so this is a lower bound of the full KL; measured on the tiny test model it is within
  a few percent of it (test_evaluation_speed.py), since the mass and the disagreement sit in the top tokens.
  The report says which reference was used (Fidelity.reference).
- **top-1 agreement**: share of those positions where both distributions have the same most likely token.
- **drift KLD**: mean KL(P_base || P_model) over all positions of a small bundled general-text set: how far a
  fine-tune moved away from what the base could do on non-journal text.
- **looping** (``loop_reason``): an answer whose most frequent word 3-gram makes up over 30% of its 3-grams
  (at least 4 times), or which has fewer than 20% distinct words (12+ words), or repeats one sentence of
  20+ characters 3 times, or one character 20 times.
- **invented turn** (``invented_turn``): an answer containing a line that starts another speaker's turn
  (``### User:``, ``### Manager:``, ``User:``, ``Assistant:`` ...) or a chat-format control marker.
- **empty**: nothing but whitespace. **cut**: generation stopped at the token limit (finish_reason "length").
- **regurgitation**: for each answer, the longest run of characters (whitespace collapsed) copied verbatim
  from any training answer; the metric reports the longest such run and the share of answers with a run of
  at least ``COPY_CHARS`` (50) characters.
- **prompt gain** (``prompt_gains``): for each eval conversation, the answer's mean NLL per token under
  ``NEUTRAL_PROMPT`` (the system turn kept, the user turn replaced) minus its mean NLL under its own prompt:
  how much the model's answer depends on what it was asked (nats per answer token; reported as the mean over
  conversations). Training on answers paired with the wrong prompts lowers it without moving the eval loss:
  on the sample vault (CPU default, 11 eval conversations) nights 2 and 3 gained 0.205 and 0.200, the base
  0.257, and a night trained on the same answers scrambled across prompts 0.135, at an eval loss 0.4% *below*
  the live model's (bench/results/quality.json, "prompt_gain").
- **style similarity**: cosine similarity between the function-word frequency profiles (``FUNCTION_WORDS``)
  of the model's probe answers and of the person's held-out reflections (the eval split). Reported only.
"""
from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

COPY_CHARS = 50
# The user turn the prompt gain scores every answer under: a request with no content, so the loss it gives an
# answer is what the model predicts from the system turn and the answer alone. (Other conversations' prompts
# separate the models as well, 4 of them at 4x the cost, and they change as the eval split grows.)
NEUTRAL_PROMPT = "Write."

# ---- distributions ------------------------------------------------------------------------------------


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _tensor(x, dtype=None):
    """float64 on CUDA when available, else on the CPU (torch's reductions use every core; numpy's exp over a
    262k vocabulary ran on one). float64 because fidelity KLDs of an f16 export are ~1e-6."""
    import torch

    return torch.as_tensor(np.asarray(x), device=_device()).to(dtype or torch.float64)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    import torch

    return torch.log_softmax(_tensor(logits), dim=-1).cpu().numpy()


def token_nll(logits: np.ndarray, ids: list[int], start: int, rows_from: int = 0) -> np.ndarray:
    """NLL of ids[start:], each given the logits of the position before it (logits: [len(ids), vocab], or
    only rows ``rows_from``.. of it)."""
    import torch

    targets = torch.as_tensor(np.asarray(ids[start:]), device=_device())
    lp = torch.log_softmax(_tensor(np.asarray(logits)[start - 1 - rows_from:len(ids) - 1 - rows_from]), dim=-1)
    return -lp.gather(-1, targets[:, None])[:, 0].cpu().numpy()


def kl_and_top1(ref_logits: np.ndarray, model_logits: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-position KL(ref || model) and whether the argmaxes agree, over the vocabulary both share
    (a padded vocabulary's extra rows are left out)."""
    import torch

    n = min(ref_logits.shape[-1], model_logits.shape[-1])
    kls, agree = [], []
    for i in range(0, len(ref_logits), chunk):
        p = torch.log_softmax(_tensor(ref_logits[i:i + chunk, :n]), dim=-1)
        q = torch.log_softmax(_tensor(model_logits[i:i + chunk, :n]), dim=-1)
        kls.append(torch.clamp((p.exp() * (p - q)).sum(-1), min=0.0).cpu().numpy())
        agree.append((p.argmax(-1) == q.argmax(-1)).cpu().numpy())
    if not kls:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return np.concatenate(kls), np.concatenate(agree)


def sparse_kl_top1_nll(ref_ids: np.ndarray, ref_logp: np.ndarray, ref_tail: np.ndarray, model_logits: np.ndarray,
                       targets: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-position KL(ref || model), top-1 agreement and the model's NLL of ``targets`` (row i's next token).

    The reference is kept as its top k log-probs (``ref_ids``/``ref_logp``, [P, k], column 0 its argmax) and the
    log of the rest (``ref_tail``, [P]): the KL is the one between the two distributions coarse-grained to {each
    top-k token, everything else}, by the log-sum inequality a lower bound of the full KL (see the definitions
    above); top-1 agreement is exact. All three come from one log-softmax of one copy of the logits: the
    fidelity pass of the nightly evaluation, where each conversation's [answer tokens x vocabulary] logits
    (~25M values for Llama 3.1's 128k vocabulary) were copied and normalized twice, for the KLD and the loss."""
    import torch

    q = torch.log_softmax(_tensor(model_logits), dim=-1)
    idx = torch.as_tensor(np.asarray(ref_ids), device=q.device).long()
    p_top, q_top = _tensor(ref_logp), q.gather(-1, idx)
    q_tail = torch.logsumexp(q.scatter(-1, idx, float("-inf")), dim=-1)
    p_tail = _tensor(ref_tail)
    kl = (p_top.exp() * (p_top - q_top)).sum(-1)
    kl = kl + torch.where(p_tail > float("-inf"), p_tail.exp() * (p_tail - q_tail), torch.zeros_like(p_tail))
    agree = q.argmax(-1) == idx[:, 0]
    nll = -q.gather(-1, torch.as_tensor(np.asarray(targets), device=q.device)[:, None])[:, 0]
    return torch.clamp(kl, min=0.0).cpu().numpy(), agree.cpu().numpy(), nll.cpu().numpy()


def mean_or_none(total: float, count: int) -> float | None:
    return total / count if count else None


# ---- answers ------------------------------------------------------------------------------------------

# "### Anything:" (the plain-text template's markers, and names the model invents: "### Manager:"), or a
# line opening with a chat role and a colon ("User:", "**Assistant:**").
_ROLE_LINE = re.compile(r"^[ \t]*(?:#{1,6}[ \t]*\w+[ \t]*:|(?:\*\*)?(?:system|user|assistant|model|human|ai|bot)"
                        r"(?:\*\*)?[ \t]*:)", re.IGNORECASE | re.MULTILINE)
_CONTROL = re.compile(r"<start_of_turn>|<end_of_turn>|<\|im_start\|>|<\|im_end\|>|<\|start_header_id\|>|<\|eot_id\|>")


def invented_turn(text: str) -> str | None:
    """The first marker of another speaker's turn in an answer, or None."""
    m = _CONTROL.search(text) or _ROLE_LINE.search(text)
    return m.group(0).strip() if m else None


def word_loop(text: str) -> str | None:
    """A word 3-gram over 30% of the answer (4+ times), or under 20% distinct words (12+ words); else None.
    Shared by the evaluation's probes and the export's validation answers."""
    words = re.findall(r"\w+|[^\w\s]", text.lower())
    if len(words) >= 12:
        grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
        top, count = Counter(grams).most_common(1)[0]
        if count / len(grams) > 0.3 and count >= 4:
            return f"repeats {' '.join(top)!r} {count} times"
        if len(set(words)) / len(words) < 0.2:
            return f"only {len(set(words))} distinct words in {len(words)}"
    return None


def loop_reason(text: str) -> str | None:
    """Why an answer loops, or None (empty answers are counted separately)."""
    if not text.strip():
        return None
    if reason := word_loop(text):
        return reason
    sentences = [s.strip().lower() for s in re.split(r"(?<=[.!?\n])\s+", text) if len(s.strip()) >= 20]
    if sentences:
        sentence, count = Counter(sentences).most_common(1)[0]
        if count >= 3:
            return f"repeats one sentence {count} times"
    if re.search(r"(.)\1{19,}", text):
        return "one character repeated 20+ times"
    return None


def _normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def longest_copied_run(answer: str, corpus: str) -> int:
    """Length of the longest substring of ``answer`` that occurs verbatim in ``corpus`` (both with
    whitespace collapsed). A suffix automaton of the answer, streamed over the corpus: O(len(corpus))."""
    a, t = _normalize(answer), _normalize(corpus)
    if not a or not t:
        return 0
    link, length, trans = [-1], [0], [{}]
    last = 0
    for ch in a:  # build the automaton of the answer
        cur = len(length)
        length.append(length[last] + 1)
        link.append(-1)
        trans.append({})
        p = last
        while p != -1 and ch not in trans[p]:
            trans[p][ch] = cur
            p = link[p]
        if p == -1:
            link[cur] = 0
        else:
            q = trans[p][ch]
            if length[p] + 1 == length[q]:
                link[cur] = q
            else:
                clone = len(length)
                length.append(length[p] + 1)
                link.append(link[q])
                trans.append(dict(trans[q]))
                while p != -1 and trans[p].get(ch) == q:
                    trans[p][ch] = clone
                    p = link[p]
                link[q] = link[cur] = clone
        last = cur
    best = state = cur_len = 0
    for ch in t:
        while state and ch not in trans[state]:
            state = link[state]
            cur_len = length[state]
        if ch in trans[state]:
            state = trans[state][ch]
            cur_len += 1
            best = max(best, cur_len)
        else:
            state = cur_len = 0
    return best


def regurgitation(answers: list[str], training_texts: list[str]) -> tuple[int, float]:
    """(longest verbatim run over all answers, share of answers with a run >= COPY_CHARS)."""
    corpus = "\n\x00\n".join(training_texts)
    runs = [longest_copied_run(a, corpus) for a in answers]
    if not runs:
        return 0, 0.0
    return max(runs), sum(r >= COPY_CHARS for r in runs) / len(runs)


FUNCTION_WORDS = tuple((
    "a about after all also an and any are as at be because been but by can could did do does for from had has "
    "have he her him his how i if in into is it its just like may me might more most much must my no not now of "
    "on one only or other our out over should so some such than that the their them then there these they this "
    "those though through to too under up us very was we were what when where which while who why will with "
    "would yet you your").split())


def function_word_profile(texts: list[str]) -> np.ndarray:
    words = re.findall(r"[a-z']+", " ".join(texts).lower())
    counts = Counter(w for w in words if w in set(FUNCTION_WORDS))
    return np.array([counts[w] for w in FUNCTION_WORDS], dtype=float) / max(len(words), 1)


def prompt_gains(own: list[tuple[float, int]], neutral: list[tuple[float, int] | None]) -> list[float]:
    """Per conversation, mean NLL under the neutral prompt minus under its own prompt ((summed NLL, tokens)
    pairs, aligned; conversations without a neutral score or without tokens are left out)."""
    return [ns / nn - os / on for (os, on), pair in zip(own, neutral) if pair is not None
            for ns, nn in [pair] if on and nn]


def style_similarity(answers: list[str], reference: list[str]) -> float | None:
    a, b = function_word_profile(answers), function_word_profile(reference)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else None


def finite_or_none(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None
