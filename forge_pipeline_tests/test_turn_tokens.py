"""Untrained turn tokens get a trained token's row (turn_tokens.py), checked with numpy cosines computed here."""
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from forge_pipeline.training.chat_template import GEMMA_CHAT_TEMPLATE
from forge_pipeline.training.turn_tokens import seed_untrained_turn_tokens
from forge_pipeline_tests.helpers import make_tiny_gemma


def neighbours(weight: np.ndarray, row: int, cosine: float = 0.99) -> int:
    unit = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    return int((unit @ unit[row] > cosine).sum()) - 1


def untrained_cluster(model, rows: list[int]) -> None:
    """What pretraining leaves: ``rows`` all near one vector (initialisation, never moved)."""
    w = model.get_input_embeddings().weight
    centre = torch.randn(w.shape[1])
    with torch.no_grad():
        for r in rows:
            w[r] = centre + 0.001 * torch.randn(w.shape[1])


def test_untrained_end_of_turn_gets_eos_row_and_nothing_else_moves(tmp_path):
    base = make_tiny_gemma(tmp_path / "gemma")
    model, tok = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    eot, sot, eos = (tok.convert_tokens_to_ids(t) for t in ("<end_of_turn>", "<start_of_turn>", tok.eos_token))
    cluster = [eot] + list(range(200, 300))
    untrained_cluster(model, cluster)
    before = model.get_input_embeddings().weight.detach().numpy().copy()
    assert neighbours(before, eot) >= 100  # the defect: end of turn indistinguishable from 100 unused rows

    seeded = seed_untrained_turn_tokens(model, tok)

    after = model.get_input_embeddings().weight.detach().numpy()
    assert seeded == {"<end_of_turn>": tok.eos_token}
    assert np.array_equal(after[eot], before[eos]) and neighbours(after, eot) == 1  # EOS itself only
    changed = np.flatnonzero(np.any(after != before, axis=1))
    assert changed.tolist() == [eot]  # start of turn (trained here), EOS and the unused rows untouched
    assert np.array_equal(after[sot], before[sot])
    # the output layer is tied: the end-of-turn logit is now EOS's, a text end the base already predicts
    assert np.array_equal(model.get_output_embeddings().weight.detach().numpy()[eot], before[eos])


def test_trained_turn_tokens_and_own_templates_are_left_alone(tmp_path):
    base = make_tiny_gemma(tmp_path / "gemma")
    model, tok = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    before = model.get_input_embeddings().weight.detach().numpy().copy()
    assert seed_untrained_turn_tokens(model, tok) == {}  # random rows: every token is distinct

    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    untrained_cluster(model, [eot] + list(range(200, 300)))
    clustered = model.get_input_embeddings().weight.detach().numpy().copy()
    tok.chat_template = GEMMA_CHAT_TEMPLATE  # an instruct base ships its own template: not ours to change
    assert seed_untrained_turn_tokens(model, tok) == {}
    assert np.array_equal(model.get_input_embeddings().weight.detach().numpy(), clustered)
    assert not np.array_equal(clustered, before)


def test_training_on_a_local_base_with_an_untrained_end_of_turn_says_so(curated, tmp_path):
    """A local or hub base is the user's and never rewritten: training goes on, and its log says why the
    answers will not end (and a base forge converts itself gets the seeding instead)."""
    from forge_pipeline.training.trainer import run_training
    from forge_pipeline_tests.helpers import tiny_cfg

    logs = {}
    for name, clustered in (("plain", False), ("clustered", True)):
        base = make_tiny_gemma(tmp_path / name)
        if clustered:
            model = AutoModelForCausalLM.from_pretrained(base)
            eot = AutoTokenizer.from_pretrained(base).convert_tokens_to_ids("<end_of_turn>")
            untrained_cluster(model, [eot] + list(range(200, 300)))
            model.save_pretrained(base)
        logs[name] = []
        run_training(curated.curated_path, tmp_path / f"out-{name}", tiny_cfg(base, max_steps=1, eval_steps=100),
                     home=curated.home_dir, log=logs[name].append)
    said = [m for m in logs["clustered"] if "<end_of_turn> has never been trained" in m]
    assert said and said[0].startswith("warning:"), logs["clustered"]
    assert not any("never been trained" in m for m in logs["plain"])


def test_an_all_zero_turn_row_is_untrained_and_an_own_templates_end_of_turn_is_checked(tmp_path):
    """Llama 3's base leaves its chat tokens at zero (no cosine neighbours to count), and ships the instruct
    template as its own: the end-of-turn token of whatever template training uses is the one checked."""
    from forge_pipeline.training.turn_tokens import is_untrained, untrained_end_of_turn

    base = make_tiny_gemma(tmp_path / "gemma")
    model, tok = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    embed = model.get_input_embeddings().weight
    tok.chat_template = GEMMA_CHAT_TEMPLATE + "{# the base's own #}"  # not the family template verbatim
    assert not is_untrained(embed, eot) and untrained_end_of_turn(model, tok) is None  # random rows: trained
    with torch.no_grad():
        embed[eot] = 0.0
    assert is_untrained(embed, eot) and untrained_end_of_turn(model, tok) == "<end_of_turn>"
    tok.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    assert untrained_end_of_turn(model, tok) is None  # a plain-text stop is not a token to train
