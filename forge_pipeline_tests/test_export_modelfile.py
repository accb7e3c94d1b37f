"""The Ollama Modelfile written beside a merged GGUF: its TEMPLATE renders every conversation exactly as the
GGUF's own chat template does, for each chat template forge trains with; it parses under the Modelfile
grammar; templates it cannot translate faithfully are left to Ollama, with the reason."""
import pytest

from forge_pipeline.export.modelfile import (
    GoTemplateError,
    parse_modelfile,
    render_go,
    render_jinja,
    translate_template,
    write_modelfile,
)
from forge_pipeline.training import chat_template as ct

TEMPLATES = {"plain": (ct.DEFAULT_CHAT_TEMPLATE, "<s>", "</s>"),
             "gemma": (ct.GEMMA_CHAT_TEMPLATE, "<bos>", "<eos>"),
             "chatml": (ct.CHATML_CHAT_TEMPLATE, "", "<|endoftext|>"),
             "llama3": (ct.LLAMA3_CHAT_TEMPLATE, "<|begin_of_text|>", "<|end_of_text|>")}

CONVERSATIONS = [
    [{"role": "user", "content": "What did I learn this week?"}],
    [{"role": "system", "content": "You are a thoughtful, reflective companion."},
     {"role": "user", "content": "Looking back, was the move right?"}],
    [{"role": "system", "content": "Short answers."}, {"role": "user", "content": "First"},
     {"role": "assistant", "content": "Answer one,\nwith a newline."}, {"role": "user", "content": "Second  "}],
]


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_translated_template_renders_like_the_jinja_template(family):
    jinja, bos, eos = TEMPLATES[family]
    found, go, problem = translate_template(jinja, bos, eos)
    assert problem is None and found.name == family
    for messages in CONVERSATIONS:  # beyond the probes translate_template checks itself
        expected = render_jinja(jinja, messages, bos, eos)
        assert expected.startswith(bos)
        assert render_go(go, messages) == expected[len(bos):]
    # the conversation ends ready for the assistant's turn, as Ollama needs
    assert render_go(go, CONVERSATIONS[0]).endswith({"plain": "### Assistant:\n", "gemma": "<start_of_turn>model\n",
                                                     "chatml": "<|im_start|>assistant\n",
                                                     "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n"}[family])


def test_go_interpreter_follows_text_template_rules():
    # trim markers eat all adjacent white space, newlines included (text/template docs: "{{23 -}} < {{- 45}}")
    assert render_go('{{ "23" -}} <  \n {{- "45" }}', []) == "23<45"
    assert render_go('a\n{{- range .Messages }} [{{ .Role }}:{{ .Content }}]{{ end }}\n',
                     [{"role": "user", "content": "x"}]) == "a [user:x]\n"
    # variables declared outside range keep assignments made inside it (Go >= 1.11)
    assert render_go('{{- $n := "" }}{{ range .Messages }}{{ $n = printf "%s%s" $n .Role }}{{ end }}{{ $n }}',
                     [{"role": "a", "content": ""}, {"role": "b", "content": ""}]) == "ab"
    assert render_go('{{ if eq .System "" }}none{{ else if eq .System "s" }}s{{ else }}other{{ end }}', [], "s") == "s"
    with pytest.raises(GoTemplateError):
        render_go('{{ if eq .System "" }}unclosed', [])
    with pytest.raises(GoTemplateError, match="raw newline"):
        render_go('{{ printf "a\nb" }}', [])


def test_an_untranslatable_template_gets_no_template_line(tmp_path):
    # Llama 3.1's own template adds a knowledge-date header to the system turn: close to llama3, not equal
    llama31 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
               "{% if m['role'] == 'system' %}Cutting Knowledge Date: December 2023\n\n{% endif %}"
               "{{ m['content'] }}<|eot_id|>{% endfor %}<|start_header_id|>assistant<|end_header_id|>\n\n")
    family, go, problem = translate_template(llama31, "<|begin_of_text|>", "<|eot_id|>")
    assert family.name == "llama3" and go is None and "renders differently" in problem
    assert translate_template("{{ messages }}", "", "")[2].startswith("the chat template matches none")


def test_modelfile_grammar_parser():
    text = ('# comment\nFROM ./companion-q4_k_m.gguf\nTEMPLATE """{{ range .Messages }}\n{{ .Content }}{{ end }}"""\n'
            'SYSTEM """You are kind."""\nparameter stop "<end_of_turn>"\nPARAMETER stop ### User:\n'
            'PARAMETER temperature 0.7\n')
    assert parse_modelfile(text) == [
        ("FROM", "./companion-q4_k_m.gguf"), ("TEMPLATE", "{{ range .Messages }}\n{{ .Content }}{{ end }}"),
        ("SYSTEM", "You are kind."), ("PARAMETER", "stop <end_of_turn>"), ("PARAMETER", "stop ### User:"),
        ("PARAMETER", "temperature 0.7")]
    with pytest.raises(ValueError, match="unterminated"):
        parse_modelfile('TEMPLATE """never closed\n')
    with pytest.raises(ValueError, match="unknown instruction"):
        parse_modelfile("FORM ./x.gguf\n")


def _tiny_gguf_with_template(path, template: str):
    """A real GGUF (vocabulary and chat template only; no tensors are needed to read chat facts)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "hi"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_eot_token_id(4)
    w.add_chat_template(template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_write_modelfile_from_a_gguf(tmp_path):
    gguf_path = _tiny_gguf_with_template(tmp_path / "companion-f16.gguf", ct.GEMMA_CHAT_TEMPLATE)
    report = write_modelfile(gguf_path, system_prompt="You are a thoughtful, reflective companion.")
    assert report.template_written and report.family == "gemma"
    parsed = parse_modelfile(report.path.read_text())
    assert parsed[0] == ("FROM", "./companion-f16.gguf") and (tmp_path / parsed[0][1]).exists()
    template = dict(parsed)["TEMPLATE"]
    messages = CONVERSATIONS[1]
    assert render_go(template, messages) == render_jinja(ct.GEMMA_CHAT_TEMPLATE, messages, "<bos>", "<eos>")[5:]
    assert ("SYSTEM", "You are a thoughtful, reflective companion.") in parsed
    stops = [arg.split(" ", 1)[1] for word, arg in parsed if word == "PARAMETER"]
    assert stops == ["<end_of_turn>", "<start_of_turn>", "<eos>"]  # end of turn (also the GGUF's EOT), EOS
