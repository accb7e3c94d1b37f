"""An Ollama Modelfile beside a merged GGUF: ``FROM`` the GGUF, ``TEMPLATE`` translated from the GGUF's own chat
template (Jinja) into Ollama's Go-template syntax, ``PARAMETER stop`` from its end-of-turn tokens, and the
system prompt the model was trained with.

Jinja cannot be translated to Go templates in general, so the chat families forge trains with
(training/chat_template.py: plain-text ``### User:``, Gemma turns, ChatML, Llama 3 headers) each have a
hand-written Go template, and every translation is checked before it is written: the GGUF's Jinja template
(rendered with jinja2 as transformers renders it) and the Go template (rendered by the small interpreter
below, which implements the subset of text/template the translations use, with Go's trim markers) must give
the same text for several conversations. A template that matches no family, or whose rendering differs
(e.g. Llama 3.1's own template, which adds a knowledge-date header), gets no TEMPLATE line: Ollama then
falls back to its own detection, and the report says why.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from forge_pipeline.export.gotemplate import GoTemplateError, render_go  # noqa: F401 (re-exported for callers)
from forge_pipeline.files import atomic_write_text

# ---- the families --------------------------------------------------------------------------------------
# {eos} is replaced by the GGUF's EOS token text before use.

PLAIN_GO = ('{{- range .Messages }}'
            '{{ if eq .Role "system" }}### System:\n{{ .Content }}\n\n'
            '{{ else if eq .Role "user" }}### User:\n{{ .Content }}\n\n'
            '{{ else if eq .Role "assistant" }}### Assistant:\n{{ .Content }}{eos}\n\n'
            '{{ end }}{{ end }}### Assistant:\n')

# Gemma has no system role: system text opens the next turn, followed by a blank line (as in
# training/chat_template.py's GEMMA_CHAT_TEMPLATE). "\\n" stays an escape inside the Go string literal.
GEMMA_GO = ('{{- $system := "" }}{{ range .Messages }}'
            '{{ if eq .Role "system" }}{{ $system = printf "%s%s\\n\\n" $system .Content }}'
            '{{ else if eq .Role "assistant" }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n'
            '{{ $system = "" }}'
            '{{ else }}<start_of_turn>{{ .Role }}\n{{ $system }}{{ .Content }}<end_of_turn>\n'
            '{{ $system = "" }}'
            '{{ end }}{{ end }}<start_of_turn>model\n')

CHATML_GO = ('{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
             '{{ end }}<|im_start|>assistant\n')

LLAMA3_GO = ('{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>'
             '{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n')


@dataclass(frozen=True)
class Family:
    name: str
    marker: str  # text whose presence in the Jinja template identifies the family
    go_template: str
    stops: tuple[str, ...]  # end of turn first, then the start of another turn


FAMILIES = (
    Family("llama3", "<|start_header_id|>", LLAMA3_GO, ("<|eot_id|>", "<|start_header_id|>")),
    Family("gemma", "<start_of_turn>", GEMMA_GO, ("<end_of_turn>", "<start_of_turn>")),
    Family("chatml", "<|im_start|>", CHATML_GO, ("<|im_end|>", "<|im_start|>")),
    Family("plain", "### Assistant:", PLAIN_GO, ("### User:", "### System:")),
)

PROBES = (  # conversations both renderings must agree on
    [{"role": "system", "content": "You are a companion."}, {"role": "user", "content": "What did I learn?"}],
    [{"role": "user", "content": "Hello"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "One"},
     {"role": "assistant", "content": "Two"}, {"role": "user", "content": "Three?"}],
)


# ---- Jinja side --------------------------------------------------------------------------------------

def render_jinja(template: str, messages: list[dict], bos: str = "", eos: str = "") -> str:
    """The chat template rendered as transformers renders it (sandboxed, trim_blocks, lstrip_blocks)."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, bos_token=bos, eos_token=eos,
                                            add_generation_prompt=True)


# ---- Modelfile -----------------------------------------------------------------------------------------

@dataclass
class ModelfileReport:
    path: Path
    family: str | None
    template_written: bool
    stops: list[str] = field(default_factory=list)
    problem: str | None = None  # why no TEMPLATE line was written


def translate_template(jinja_template: str, bos: str, eos: str) -> tuple[Family | None, str | None, str | None]:
    """(family, Go template, problem): the Go template only when it renders every probe exactly as the Jinja
    template does (the BOS text is left out: Ollama's tokenizer adds BOS itself)."""
    family = next((f for f in FAMILIES if f.marker in jinja_template), None)
    if family is None:
        return None, None, "the chat template matches none of the known families (plain, gemma, chatml, llama3)"
    go = family.go_template.replace("{eos}", eos)
    for messages in PROBES:
        want = render_jinja(jinja_template, messages, bos, eos)
        if bos and want.startswith(bos):
            want = want[len(bos):]
        got = render_go(go, messages)
        if got != want:
            return family, None, (f"the {family.name} Go template renders differently from the GGUF's template "
                                  f"(first difference at character {_first_diff(got, want)})")
    return family, go, None


def _first_diff(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _gguf_chat_facts(gguf_path: Path) -> tuple[str | None, str, str, list[str]]:
    """(chat template, BOS text, EOS text, end-of-turn token texts) read from the GGUF's metadata."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields

    def get(key):
        return fields[key].contents() if key in fields else None

    tokens = fields["tokenizer.ggml.tokens"]

    def token(key):
        idx = get(key)
        return str(tokens.contents(int(idx))) if idx is not None else ""

    eot = [t for t in (token("tokenizer.ggml.eot_token_id"), token("tokenizer.ggml.eos_token_id")) if t]
    return get("tokenizer.chat_template"), token("tokenizer.ggml.bos_token_id"), \
        token("tokenizer.ggml.eos_token_id"), eot


def _quote(text: str) -> str:
    if '"""' in text:
        raise ValueError('text for a Modelfile cannot contain """')
    return f'"""{text}"""'


def write_modelfile(gguf_path: Path, system_prompt: str | None = None, out_path: Path | None = None) -> ModelfileReport:
    """Write ``Modelfile`` beside ``gguf_path`` (``ollama create companion -f Modelfile`` in that folder)."""
    gguf_path = Path(gguf_path)
    out_path = Path(out_path) if out_path else gguf_path.with_name("Modelfile")
    template, bos, eos, eot = _gguf_chat_facts(gguf_path)
    family, go, problem = translate_template(template, bos, eos) if template else \
        (None, None, "the GGUF carries no tokenizer.chat_template")
    stops: list[str] = []
    for s in (*(family.stops if family else ()), *eot):
        if s and s not in stops:
            stops.append(s)
    lines = ["# Ollama: ollama create companion -f Modelfile   (written by forge export --merged)",
             f"FROM ./{gguf_path.name}"]
    if go:
        lines.append(f"TEMPLATE {_quote(go)}")
    else:
        lines.append(f"# no TEMPLATE: {problem}; Ollama detects one from the GGUF")
    if system_prompt:
        lines.append(f"SYSTEM {_quote(system_prompt)}")
    lines += [f"PARAMETER stop {_param(s)}" for s in stops]
    atomic_write_text(out_path, "\n".join(lines) + "\n")
    return ModelfileReport(out_path, family.name if family else None, go is not None, stops, problem)


def _param(value: str) -> str:
    return f'"{value}"' if re.search(r'\s|"', value) or not value else value


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) pairs, following Ollama's Modelfile grammar: one instruction per line
    (case-insensitive), # comments, an argument either to the end of the line, "quoted", or in \"\"\"triple
    quotes\"\"\" spanning lines. Raises ValueError on an unknown instruction or an unterminated quote."""
    known = {"FROM", "TEMPLATE", "SYSTEM", "PARAMETER", "ADAPTER", "LICENSE", "MESSAGE", "REQUIRES"}
    out, i, n = [], 0, len(text)
    while i < n:
        line_end = text.find("\n", i)
        line_end = n if line_end < 0 else line_end
        line = text[i:line_end].strip()
        if not line or line.startswith("#"):
            i = line_end + 1
            continue
        m = re.match(r"(\w+)\s+", text[i:line_end].lstrip())
        if not m:
            raise ValueError(f"Modelfile: cannot parse line {line!r}")
        word = m.group(1).upper()
        if word not in known:
            raise ValueError(f"Modelfile: unknown instruction {m.group(1)!r}")
        start = i + (len(text[i:line_end]) - len(text[i:line_end].lstrip())) + m.end()
        if text.startswith('"""', start):
            end = text.find('"""', start + 3)
            if end < 0:
                raise ValueError(f"Modelfile: unterminated \"\"\" after {word}")
            out.append((word, text[start + 3:end]))
            i = text.find("\n", end + 3)
            i = n if i < 0 else i + 1
            continue
        arg = text[start:line_end].strip()
        if word == "PARAMETER":
            name, _, value = arg.partition(" ")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            arg = f"{name} {value}"
        out.append((word, arg))
        i = line_end + 1
    return out
