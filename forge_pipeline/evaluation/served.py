"""A model as serving runs it: a GGUF, optionally with a LoRA adapter GGUF on top, in llama-cpp-python.

Everything measured on a served model goes through here: the logits of given token ids (loss, KLD), the
embedded chat template rendered and tokenized the way llama-cpp-python's chat handler does (the template
round trip), which tokens end generation, and probe answers (llama-cpp-python's sampler, see answer()).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from forge_pipeline.files import atomic_write_json, sha256_file


@dataclass(frozen=True)
class ServedModel:
    """What serving loads: a full GGUF, or a base GGUF plus a LoRA adapter GGUF."""

    gguf: Path
    lora: Path | None = None

    def describe(self) -> str:
        return f"{Path(self.gguf).name} + {Path(self.lora).name}" if self.lora else Path(self.gguf).name


def _serving_default(name: str):
    from serving.settings import ServingSettings

    return ServingSettings.model_fields[name].default


@dataclass
class Sampling:
    """How probe prompts are answered. The defaults are serving's own (serving/settings.py owns them); the
    evaluation uses Sampling.from_serving(), which also reads a person's FORGE_DEFAULT_* settings."""

    temperature: float = field(default_factory=lambda: _serving_default("default_temperature"))
    top_p: float = field(default_factory=lambda: _serving_default("default_top_p"))
    repeat_penalty: float = field(default_factory=lambda: _serving_default("default_repeat_penalty"))
    max_tokens: int = field(default_factory=lambda: _serving_default("default_max_tokens"))
    seed: int = 0

    @classmethod
    def from_serving(cls, settings=None) -> Sampling:
        """What a chat request that sets nothing gets from serving (its FORGE_* settings)."""
        from serving.settings import ServingSettings

        s = settings or ServingSettings()
        return cls(temperature=s.default_temperature, top_p=s.default_top_p, repeat_penalty=s.default_repeat_penalty,
                   max_tokens=s.default_max_tokens)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProbeAnswer:
    prompt: str
    text: str
    finish_reason: str | None
    completion_tokens: int
    flags: dict = field(default_factory=dict)  # loop / invented_turn / empty / cut -> reason


def file_identity(path: Path, cache_file: Path | None = None) -> str:
    """sha256 of a model file, remembered by (path, size, mtime) so a 5 GB GGUF is hashed once."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
    cache = {}
    if cache_file is not None and Path(cache_file).exists():
        try:
            cache = json.loads(Path(cache_file).read_text())
        except ValueError:
            cache = {}
    if key not in cache:
        cache[key] = sha256_file(path)
        if cache_file is not None:
            atomic_write_json(Path(cache_file), cache)
    return cache[key]


class LoadedModel:
    """One llama.cpp instance of a ServedModel (use as a context manager; it frees native memory on exit)."""

    def __init__(self, model: ServedModel, n_ctx: int, n_threads: int | None = None, fallback_template: str | None = None):
        # open_llama raises when llama.cpp refuses the adapter; plain Llama(lora_path=...) would silently run
        # the bare base (llama-cpp-python 0.3.36, see export/validate.py).
        from forge_pipeline.export.validate import open_llama

        for p in (model.gguf, model.lora):
            if p is not None and not Path(p).is_file():
                raise FileNotFoundError(f"{p}: model file not found")
        self.model = ServedModel(Path(model.gguf))
        # logits_all keeps every position's logits (loss, KLD); n_batch bounds llama.cpp's own logits
        # buffer (n_batch x vocab floats: 256 MB for Gemma's 262k vocabulary at 256). The base opens without
        # its adapter: adapters are applied on the context (use()), so base, candidate and live adapters of
        # one base GGUF share one load, as serving shares its resident base.
        self.llm = open_llama(Path(model.gguf), None, n_ctx=n_ctx, n_batch=min(n_ctx, 256), logits_all=True,
                              n_threads=n_threads)
        self._adapters: dict[Path, object] = {}  # adapter GGUF -> llama.cpp handle
        self._slot = _AdapterSlot(self.llm)
        self.template = self.llm.metadata.get("tokenizer.chat_template")
        vocab = self.llm._model.vocab
        import llama_cpp

        self._is_eog = lambda t: bool(llama_cpp.llama_vocab_is_eog(vocab, int(t)))
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        self.eos_text = self.llm._model.token_get_text(eos) if eos != -1 else ""
        self.bos_text = self.llm._model.token_get_text(bos) if bos != -1 else ""
        # A base GGUF without a template answers in the candidate's format (answer() renders used_template),
        # so probes compare like for like.
        self.used_template = self.template or fallback_template
        try:
            self.use(model)
        except Exception:
            self.close()
            raise

    def shares_base(self, model: ServedModel) -> bool:
        return Path(model.gguf).resolve() == Path(self.model.gguf).resolve()

    def use(self, model: ServedModel) -> None:
        """Run ``model`` (this base GGUF, bare or with an adapter GGUF) from now on: the adapter is loaded once
        and set on the context through serving's own adapter switch (KV cache cleared on a change)."""
        if not self.shares_base(model):
            raise ValueError(f"{model.describe()} is not on the loaded base {Path(self.model.gguf).name}")
        import llama_cpp

        from serving.worker import GenerationWorker

        handle = None
        if model.lora is not None:
            lora = Path(model.lora).resolve()
            if lora not in self._adapters:
                h = llama_cpp.llama_adapter_lora_init(self.llm.model, str(lora).encode())
                if not h:  # a NULL pointer: llama.cpp refused it (see export/validate.open_llama)
                    raise ValueError(f"llama.cpp refused the LoRA adapter {lora.name} for "
                                     f"{Path(self.model.gguf).name} (wrong base model or shapes)")
                self._adapters[lora] = h
            handle = self._adapters[lora]
        GenerationWorker.set_adapter(self._slot, _Adapter(handle) if handle is not None else None)
        self.model = ServedModel(Path(self.model.gguf), Path(model.lora) if model.lora else None)

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._adapters:
            import llama_cpp

            llama_cpp.llama_set_adapters_lora(self.llm.ctx, None, 0, None)
            for h in self._adapters.values():
                llama_cpp.llama_adapter_lora_free(h)
            self._adapters.clear()
        self.llm.close()

    @property
    def n_vocab(self) -> int:
        return self.llm.n_vocab()

    def logits(self, ids: list[int], rows_from: int = 0) -> np.ndarray:
        """[len(ids) - rows_from, vocab] logits of positions rows_from.. (a fresh context each time).

        Through llama.cpp's batch API, asking for logits only at rows_from.. and copying each batch's rows once,
        straight into the array returned: llama-cpp-python's eval() computes every position's logits (the
        prompt's too) and copies them into its n_ctx x vocab ``scores``, from which a second copy was taken.
        The rows are the same (test_evaluation_speed.py); the cost is bench/results/evaluation_speed.json's
        "logits"."""
        llm, n_vocab = self.llm, self.llm.n_vocab()
        llm.reset()  # llama-cpp-python's own view: no tokens evaluated (its next eval() starts from scratch)
        llm._ctx.kv_cache_clear()
        out = np.empty((max(0, len(ids) - rows_from), n_vocab), dtype=np.float32)
        batch, row = llm._batch, 0
        for i in range(0, len(ids), llm.n_batch):
            chunk = ids[i:i + llm.n_batch]
            batch.set_batch(batch=chunk, n_past=i, logits_all=False)
            wanted = 0
            for j in range(len(chunk)):
                batch.batch.logits[j] = i + j >= rows_from
                wanted += i + j >= rows_from
            llm._ctx.decode(batch)
            if wanted:
                out[row:row + wanted] = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(wanted, n_vocab))
                row += wanted
        return out

    def vocabulary_sha256(self) -> str:
        """sha256 of the vocabulary (every token's text, in id order): two models score the same token ids
        alike only when these are equal. ~0.3 s for Gemma's 262k tokens (measured)."""
        import hashlib

        import llama_cpp

        vocab, h = self.llm._model.vocab, hashlib.sha256()
        for i in range(self.n_vocab):
            h.update((llama_cpp.llama_vocab_get_text(vocab, i) or b"") + b"\0")
        return h.hexdigest()

    def is_eog(self, token_id: int) -> bool:
        return self._is_eog(token_id)

    def template_prompt_ids(self, messages: list[dict]) -> list[int] | None:
        """The prompt tokens serving would feed for ``messages`` (embedded template, special tokens parsed),
        or None when the GGUF has no template."""
        if not self.template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        rendered = Jinja2ChatFormatter(self.template, self.eos_text, self.bos_text)(messages=messages).prompt
        return self.llm.tokenize(rendered.encode("utf-8"), add_bos=False, special=True)

    def _render(self, prompt: str, stop: list[str] | None) -> tuple[list[int], list[str]]:
        """The prompt ids serving feeds for one user turn (used_template, special tokens parsed) and the stop
        strings the template implies plus ``stop``."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        rendered = Jinja2ChatFormatter(self.used_template, self.eos_text, self.bos_text,
                                       stop_token_ids=[self.llm.token_eos()])(messages=[{"role": "user", "content": prompt}])
        ids = self.llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)
        stops = [s for s in ([rendered.stop] if isinstance(rendered.stop, str) else list(rendered.stop or []))
                 + list(stop or []) if s]
        return ids, stops

    def answer(self, prompt: str, sampling: Sampling, stop: list[str] | None = None,
               give_up: Callable[[str], object] | None = None, check_every: int = 16) -> ProbeAnswer:
        """Serving's answer to ``prompt`` (its template, sampler settings and end-of-generation tokens); with
        ``give_up`` (e.g. metrics.loop_reason), generation stops as soon as give_up(text so far) is truthy,
        checked every ``check_every`` tokens, and the finish_reason is "gave_up": a looping answer need not
        run to the token limit to be called looping.

        Tokens come from llama-cpp-python's own sampler loop (Llama.generate, seeded as create_completion
        seeds it, so the same seed gives the same tokens), but the text is decoded here once per check:
        create_chat_completion re-detokenizes the whole completion after every token, O(n^2) in Python.
        Measured on a tiny model (2 cores): a 256-token answer took 3.0 s that way, 0.1-0.4 s here; on the
        H100 the 8B's 8 probe answers spent most of their 21 s in it."""
        from serving.worker import close_answer_sampler

        if not self.used_template:  # no template to render: llama-cpp-python's own chat handler
            self.llm.reset()
            out = self.llm.create_chat_completion(
                messages=[{"role": "user", "content": prompt}], temperature=sampling.temperature,
                top_p=sampling.top_p, repeat_penalty=sampling.repeat_penalty, max_tokens=sampling.max_tokens,
                seed=sampling.seed, stop=stop)
            close_answer_sampler(self.llm)  # its native chain would otherwise wait for a full garbage collection
            choice = out["choices"][0]
            return ProbeAnswer(prompt, choice["message"].get("content") or "", choice.get("finish_reason"),
                               int(out["usage"]["completion_tokens"]))
        ids, stops = self._render(prompt, stop)
        turn = _Turn(self, prompt, ids, stops, sampling.max_tokens, give_up, check_every)
        self.llm.reset()
        self.llm.set_seed(sampling.seed)
        # create_chat_completion's defaults for what Sampling does not set (top_k 40, min_p 0.05, typical_p 1)
        for tok in self.llm.generate(ids, top_k=40, top_p=sampling.top_p, min_p=0.05, typical_p=1.0,
                                     temp=sampling.temperature, repeat_penalty=sampling.repeat_penalty):
            if turn.push(tok):
                break
        close_answer_sampler(self.llm)
        return turn.result()

    def answer_many(self, prompts: list[str], sampling: Sampling, stop: list[str] | None = None,
                    give_up: Callable[[str], object] | None = None, check_every: int = 16) -> list[ProbeAnswer]:
        """answer() for several prompts at once: one llama.cpp decode per step carries the next token of every
        unfinished answer (a context of its own with one KV stream per prompt, the adapter in use set on it).
        Same template, sampler chain (create_completion's, see _sampler_chain), stop rules and give_up as
        answer(); prompt i samples with seed sampling.seed + i, so its tokens differ from answer()'s.

        Why: decoding one token costs about as much as decoding eight at once on these models, because every
        step reads all the weights (the embedded Gemma's 262k-row output matrix is most of them). Measured in
        bench/results/evaluation_speed.json (probes: one at a time vs together)."""
        if not self.used_template:
            return [self.answer(p, sampling, stop, give_up, check_every) for p in prompts]
        turns = []
        for prompt in prompts:
            ids, stops = self._render(prompt, stop)
            turns.append(_Turn(self, prompt, ids, stops, sampling.max_tokens, give_up, check_every))
        from forge_pipeline.evaluation.batch_decode import decode_together

        # in groups: llama.cpp caps the sequences of a context (LLAMA_MAX_SEQ), and each one's KV stream holds
        # a whole answer (a user's probe file may be long)
        for g in range(0, len(turns), MAX_TOGETHER):
            group = turns[g:g + MAX_TOGETHER]
            samplers = [_sampler_chain(self.llm, sampling, sampling.seed + g + i) for i in range(len(group))]
            try:
                decode_together(self.llm, self._slot._applied, [t.ids for t in group], samplers,
                                sampling.max_tokens, lambda i, tok, group=group: group[i].push(tok))
            finally:
                for s in samplers:  # native chains, freed now rather than at a full collection (worker.py)
                    s.close()
        return [t.result() for t in turns]


MAX_TOGETHER = 16  # answers decoded in one batch (the default probe set is 8)


def _sampler_chain(llm, sampling: Sampling, seed: int):
    """The sampler chain Llama.generate builds for create_completion's defaults (llama-cpp-python 0.3.36,
    Llama._init_sampler): repetition penalty over the last 64 tokens, then top-k 40, typical 1, top-p,
    min-p 0.05, temperature and a seeded draw (greedy at temperature 0)."""
    from llama_cpp import _internals

    if sampling.temperature < 0:
        raise ValueError(f"sampling temperature must be >= 0, got {sampling.temperature}")
    chain = _internals.LlamaSampler()
    chain.add_penalties(n_vocab=llm.n_vocab(), penalty_last_n=llm.last_n_tokens_size,
                        penalty_repeat=sampling.repeat_penalty, penalty_freq=0.0, penalty_present=0.0)
    if sampling.temperature == 0.0:
        chain.add_greedy()
    else:
        chain.add_top_k(40)
        chain.add_typical(1.0, 1)
        chain.add_top_p(sampling.top_p, 1)
        chain.add_min_p(0.05, 1)
        chain.add_temp(sampling.temperature)
        chain.add_dist(seed)
    return chain


class _Turn:
    """One answer being generated: the stop rules shared by answer() and answer_many() (an end-of-generation
    token, a stop string, give_up, the token limit)."""

    def __init__(self, model: LoadedModel, prompt: str, ids: list[int], stops: list[str], max_tokens: int,
                 give_up: Callable[[str], object] | None, check_every: int):
        self.model, self.prompt, self.ids, self.stops = model, prompt, ids, stops
        self.max_tokens, self.give_up, self.check_every = max_tokens, give_up, check_every
        self.tokens: list[int] = []
        self.finish, self.text = "length", None

    def _decode(self, toks: list[int]) -> str:
        return self.model.llm.detokenize(toks, prev_tokens=self.ids).decode("utf-8", errors="ignore")

    def push(self, tok: int) -> bool:
        """Take the next sampled token; True when the answer is finished."""
        if self.model.is_eog(tok):
            self.finish = "stop"
            return True
        self.tokens.append(tok)
        # a stop string is looked for in the last few tokens' text (it may straddle tokens), and the whole
        # text is decoded only when one shows up or give_up is due
        if self.stops and any(s in self._decode(self.tokens[-8:]) for s in self.stops):
            text = self._decode(self.tokens)
            cut = min((text.find(s) for s in self.stops if s in text), default=-1)
            if cut >= 0:
                self.text, self.finish = text[:cut], "stop"
                return True
        if (self.give_up is not None and len(self.tokens) % self.check_every == 0
                and self.give_up(self._decode(self.tokens))):
            self.finish = "gave_up"
            return True
        return len(self.tokens) >= self.max_tokens

    def result(self) -> ProbeAnswer:
        if self.text is None or self.finish != "stop":
            self.text = self._decode(self.tokens)
        return ProbeAnswer(self.prompt, self.text, self.finish, len(self.tokens))


@dataclass
class _Adapter:  # what serving's GenerationWorker.set_adapter reads
    handle: object
    scale: float = 1.0


class _AdapterSlot:
    """The two attributes serving.worker.GenerationWorker.set_adapter uses (the context and the adapter set on it), so
    the evaluation switches adapters with serving's own code."""

    def __init__(self, llm):
        self.llm, self._applied = llm, None


class OneModelAtATime:
    """At most one llama.cpp model at a time; a model on the loaded base GGUF is an adapter switch."""

    def __init__(self, n_ctx: int, n_threads: int | None):
        self.n_ctx, self.n_threads, self.current = n_ctx, n_threads, None
        self.loads = 0

    def get(self, model: ServedModel, fallback_template: str | None = None) -> LoadedModel:
        if self.current is not None and self.current.shares_base(model):
            self.current.use(model)
            return self.current
        self.close()
        self.current = LoadedModel(model, self.n_ctx, self.n_threads, fallback_template=fallback_template)
        self.loads += 1
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


def gguf_quantization(path: Path) -> str:
    """The quantization a GGUF's weights are stored in (general.file_type), as forge names it."""
    from gguf import LlamaFileType

    from serving.gguf_header import read_gguf_header

    # the header alone: gguf.GGUFReader decodes the whole 262k-token vocabulary first (30 of the 380 s of a
    # profiled evaluation on the embedded Gemma, under load)
    file_type = read_gguf_header(Path(path)).metadata.get("general.file_type")
    if file_type is None:
        return "unknown"
    name = LlamaFileType(int(file_type)).name  # e.g. MOSTLY_Q4_K_M, MOSTLY_F16, ALL_F32
    return name.replace("MOSTLY_", "").replace("ALL_", "").lower()
