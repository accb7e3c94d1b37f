"""Training with a tiny real Llama (random weights, SentencePiece tokenizer): the recipe, resume, checkpoints,
reproducibility, guards. Tests that train are marked slow (each a few seconds on 2 cores)."""
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forge_pipeline.training.base_model import BaseModelError, resolve_base_model
from forge_pipeline.training.checkpoints import SEAL, checkpoints, last_complete_checkpoint
from forge_pipeline.training.config import TrainingConfig
from forge_pipeline.training.manifest import AdapterManifest
from forge_pipeline.training.trainer import NonFiniteLossError, TrainingError, run_training, run_with_oom_backoff
from forge_pipeline_tests.helpers import tiny_cfg  # fixtures tiny_base and curated: conftest.py
from forge_pipeline_tests.tiny_models import make_tiny_llama


class Crash(Exception):
    """Stands for the trainer process dying at a given step."""


def crash_at(step: int):
    def on_metrics(m):
        if m.get("step") == step and "loss" in m:
            raise Crash(f"step {step}")
    return on_metrics


@pytest.mark.slow
def test_packing_fills_rows_with_whole_examples(curated, tiny_base, tmp_path):
    c = curated
    runs = {packing: run_training(c.curated_path, tmp_path / f"packing-{packing}", tiny_cfg(tiny_base, packing=packing,
                                  max_steps=2, max_seq_length=1024, eval_steps=None, save_steps=100), home=c.home_dir).metrics
            for packing in (False, True)}
    assert runs[True]["batch_layout"] == "packed (bfd)" and runs[False]["batch_layout"] == "padded"
    assert runs[True]["global_step"] == runs[False]["global_step"] == 2
    # the same steps carry several examples per row once packed (sample-vault examples are far below 1024 tokens)
    assert runs[True]["tokens_seen"] > 1.5 * runs[False]["tokens_seen"] > 0
    assert all(r["train_loss"] == r["train_loss"] for r in runs.values())  # not NaN


@pytest.mark.slow
def test_kill_mid_run_then_resume(curated, tiny_base, tmp_path):
    c = curated
    cfg = tiny_cfg(tiny_base, max_steps=40, save_steps=2, eval_steps=100)
    script = (f"from forge_pipeline.training.trainer import run_training\n"
              f"from forge_pipeline.training.config import TrainingConfig\n"
              f"run_training({str(c.curated_path)!r}, {str(c.training_dir)!r}, "
              f"TrainingConfig.model_validate_json({cfg.model_dump_json()!r}), home={str(c.home_dir)!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(checkpoints(c.training_dir)) < 1:
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = checkpoints(c.training_dir)
    assert done, "the trainer wrote no checkpoint before it was killed"
    last_step = max(int(p.name.split("-")[1]) for p in done)
    truncated = c.training_dir / f"checkpoint-{last_step + 1000}"
    truncated.mkdir()
    (truncated / "adapter_model.safetensors").write_bytes(b"\x10\x00")  # a save cut off mid-write
    logs = []
    report = run_training(c.curated_path, c.training_dir, cfg, home=c.home_dir, log=logs.append)
    assert any("skipping incomplete checkpoint" in m for m in logs), logs
    assert any(m.startswith("resuming from checkpoint-") for m in logs)
    assert report.status == "resumed" and report.metrics["global_step"] == 40
    assert not truncated.exists()


@pytest.mark.slow
def test_nan_loss_stops_and_publishes_nothing(curated, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    broken = make_tiny_llama(tmp_path / "broken", seed=3)
    model = AutoModelForCausalLM.from_pretrained(broken)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")  # a corrupted base: every loss is NaN
    model.save_pretrained(broken)
    c = curated
    with pytest.raises(NonFiniteLossError, match="no adapter was published"):
        run_training(c.curated_path, c.training_dir, tiny_cfg(broken, eval_steps=100), home=c.home_dir)
    assert not (c.training_dir / "final").exists()


def test_too_few_examples_fails_before_loading_a_model(forge_home, tmp_path):
    data = tmp_path / "few.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) + "\n")
    with pytest.raises(TrainingError, match="1 training examples, need at least 10"):
        run_training(data, tmp_path / "training", TrainingConfig(base_model="/nonexistent/model"))


def test_oom_backoff_keeps_the_effective_batch():
    import torch

    seen = []

    def run(batch, accum):
        seen.append((batch, accum))
        if batch > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "ok"

    assert run_with_oom_backoff(run, 4, 4, log=lambda m: None) == "ok"
    assert seen == [(4, 4), (2, 8), (1, 16)]

    def always(batch, accum):
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(TrainingError, match="lower max_seq_length"):
        run_with_oom_backoff(always, 2, 1, log=lambda m: None)
    with pytest.raises(ValueError):  # other errors are not retried
        run_with_oom_backoff(lambda b, a: (_ for _ in ()).throw(ValueError("bad")), 4, 1)


@pytest.mark.slow
def test_a_retry_after_an_oom_starts_from_the_weights_the_run_started_with(curated, tiny_base, tmp_path):
    """An out-of-memory error after two optimizer steps: the retry at half the batch must start from the LoRA
    weights the run began with, not the ones the failed attempt had already trained, so the adapter is the one
    a run at that batch gives from the start (and the one its fingerprint claims)."""
    c = curated
    oom = {"raised": False}

    def oom_at_step_2(m):
        if m.get("step") == 2 and "loss" in m and not oom["raised"]:
            oom["raised"] = True
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def adapter(name: str, on_metrics=None, **kw) -> bytes:
        cfg = tiny_cfg(tiny_base, max_steps=3, eval_steps=None, save_steps=100, **kw)
        report = run_training(c.curated_path, tmp_path / name, cfg, home=c.home_dir, log=lambda m: None,
                              on_metrics=on_metrics)
        assert report.metrics["batch_size_used"] == 1 and report.metrics["gradient_accumulation_used"] == 2
        return (Path(report.final_dir) / "adapter_model.safetensors").read_bytes()

    retried = adapter("retried", on_metrics=oom_at_step_2, batch_size=2)
    assert oom["raised"]
    assert retried == adapter("direct", batch_size=1, gradient_accumulation_steps=2)


def test_offline_hub_id_is_a_clear_error(forge_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaseModelError, match="hub cannot be reached.*local directory or a .gguf file"):
        resolve_base_model("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit", forge_home)


def test_base_model_paths(forge_home, tmp_path):
    with pytest.raises(BaseModelError, match="not found"):
        resolve_base_model(str(tmp_path / "missing.gguf"), forge_home)
    (tmp_path / "hfdir").mkdir()
    with pytest.raises(BaseModelError, match="no config.json"):
        resolve_base_model(str(tmp_path / "hfdir"), forge_home)




@pytest.mark.slow
def test_trains_publishes_a_typed_manifest_with_home_relative_paths(curated, tiny_base):
    c = curated
    report = run_training(c.curated_path, c.training_dir, tiny_cfg(tiny_base), eval_path=c.eval_path, home=c.home_dir)
    final = Path(report.final_dir)
    assert final == c.adapter_dir and report.status == "trained" and report.backend == "transformers"
    m = AdapterManifest.read(final)
    raw = json.loads((final / "manifest.json").read_text())  # stored form, read independently
    assert raw["data"]["train_path"] == "training_data/curated.jsonl" and raw["format"] == 2
    assert m.train_path() == c.curated_path and m.eval_path() == c.eval_path
    assert m.hyperparameters["lora_rank"] == 16 and m.metrics["global_step"] == 4
    assert m.eval_loss < m.base_eval_loss
    assert (final / "adapter_model.safetensors").exists() and (final / "loss_curve.png").stat().st_size > 1000
    assert checkpoints(c.training_dir) == []  # cleaned after publishing
    again = run_training(c.curated_path, c.training_dir, tiny_cfg(tiny_base), eval_path=c.eval_path, home=c.home_dir)
    assert again.status == "cached" and again.fingerprint == report.fingerprint


def test_manifest_paths_follow_a_moved_data_home(tmp_path, monkeypatch):
    """A base model converted under FORGE_HOME is stored relative to it, so the manifest stays right when the
    whole data home moves to another disk."""
    old, new = tmp_path / "old", tmp_path / "new"
    monkeypatch.setenv("FORGE_HOME", str(old))
    from forge_pipeline.training.manifest import BaseModelRef, DataRef, to_stored

    m = AdapterManifest(fingerprint="f", status="trained", backend="transformers", device="cpu", hyperparameters={},
                        base_model=BaseModelRef(name="embedded:gemma-3-270m", source="embedded", fingerprint="x",
                                                path=to_stored(old / "base_models" / "gemma-hf")),
                        data=DataRef(train_path=to_stored(old / "training_data" / "curated.jsonl"), train_sha256="s",
                                     train_examples=3))
    m.write(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "manifest.json").read_text())["base_model"]["path"] == "base_models/gemma-hf"
    monkeypatch.setenv("FORGE_HOME", str(new))
    moved = AdapterManifest.read(tmp_path / "adapter")
    assert moved.base_model_path() == str(new.resolve() / "base_models" / "gemma-hf")
    assert moved.train_path() == new.resolve() / "training_data" / "curated.jsonl"
    hub = moved.model_copy(update={"base_model": BaseModelRef(name="org/m", path="org/m", source="hub", fingerprint="h")})
    assert hub.base_model_path() == "org/m"  # a hub id is never made a path
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{")
    with pytest.raises(ValueError, match="broken/manifest.json: unreadable adapter manifest"):
        AdapterManifest.read(tmp_path / "broken")


@pytest.mark.slow
def test_same_seed_same_data_gives_a_bitwise_identical_adapter(curated, tiny_base, tmp_path):
    c = curated

    def adapter(name: str, seed: int) -> bytes:
        cfg = tiny_cfg(tiny_base, max_steps=2, eval_steps=None, save_steps=100, seed=seed)
        report = run_training(c.curated_path, tmp_path / name, cfg, home=c.home_dir, log=lambda m: None)
        return (Path(report.final_dir) / "adapter_model.safetensors").read_bytes()

    first, second = adapter("a", 7), adapter("b", 7)
    assert first == second
    assert adapter("c", 8) != first  # the seed does reach the weights, so the comparison can fail


@pytest.mark.slow
def test_checkpoints_sealed_private_rotated_and_a_corrupt_newest_is_skipped(curated, tiny_base):
    """save_total_limit keeps the newest two; each checkpoint is 0700 and sealed with sha256s; a truncated
    optimizer.pt in the newest makes the resume use the previous one, logged; base_eval_loss survives."""
    c = curated
    cfg = tiny_cfg(tiny_base, max_steps=8, save_steps=2, eval_steps=100, save_total_limit=2)
    with pytest.raises(Crash):
        run_training(c.curated_path, c.training_dir, cfg, eval_path=c.eval_path, home=c.home_dir, log=lambda m: None,
                     on_metrics=crash_at(7))
    kept = checkpoints(c.training_dir)
    assert [p.name for p in kept] == ["checkpoint-4", "checkpoint-6"]
    for ckpt in kept:
        assert stat.S_IMODE(ckpt.stat().st_mode) == 0o700
        assert "optimizer.pt" in json.loads((ckpt / SEAL).read_text())["files"]
    base_eval = json.loads((c.training_dir / "run.json").read_text())["base_eval_loss"]
    assert isinstance(base_eval, float)
    optimizer = kept[-1] / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])  # cut off mid-file
    logs = []
    report = run_training(c.curated_path, c.training_dir, cfg, eval_path=c.eval_path, home=c.home_dir, log=logs.append)
    assert any("skipping incomplete checkpoint checkpoint-6: optimizer.pt does not match" in m for m in logs), logs
    assert "resuming from checkpoint-4" in logs
    assert report.status == "resumed" and report.metrics["global_step"] == 8
    assert report.metrics["base_eval_loss"] == base_eval  # kept across the resume, not null


@pytest.mark.slow
def test_disk_full_during_a_checkpoint_save_leaves_the_previous_one_loadable(curated, tiny_base, monkeypatch):
    import torch

    c = curated
    cfg = tiny_cfg(tiny_base, max_steps=6, save_steps=2, eval_steps=100, save_total_limit=3)
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if str(f).endswith(os.path.join("checkpoint-4", "optimizer.pt")):
            Path(f).write_bytes(b"PK\x03\x04 partial")  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError, match="No space left"):
        run_training(c.curated_path, c.training_dir, cfg, home=c.home_dir, log=lambda m: None)
    monkeypatch.setattr(torch, "save", real_save)
    logs = []
    assert last_complete_checkpoint(c.training_dir, logs.append).name == "checkpoint-2"
    assert any("checkpoint-4: not sealed" in m for m in logs), logs
    report = run_training(c.curated_path, c.training_dir, cfg, home=c.home_dir, log=logs.append)
    assert "resuming from checkpoint-2" in logs and report.status == "resumed" and report.metrics["global_step"] == 6


def test_the_last_step_s_evaluation_is_the_final_eval_loss_not_run_again(curated, tiny_base, tmp_path, monkeypatch):
    """The trainer evaluated at its last step (eval_steps divides max_steps): that loss is the final one, and the
    eval set is not run a third time (base model, last step, and again after train() on the old code)."""
    from trl import SFTTrainer

    calls = []
    real = SFTTrainer.evaluate
    monkeypatch.setattr(SFTTrainer, "evaluate", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    c = curated
    report = run_training(c.curated_path, tmp_path / "run", tiny_cfg(tiny_base, max_steps=2, eval_steps=2),
                          eval_path=c.eval_path, home=c.home_dir)
    history = AdapterManifest.read_if_exists(Path(report.final_dir)).log_history
    last = [h for h in history if "eval_loss" in h][-1]
    assert last["step"] == report.metrics["global_step"] == 2
    assert report.metrics["eval_loss"] == last["eval_loss"]
    assert len(calls) == 2, len(calls)  # the base model's, and the one at step 2


# ---- GGUF arrays without gguf.GGUFReader (serving.gguf_header, base_model._write_sentencepiece_tokenizer) ------

# GGUF value type -> values for one array of that type (7: bool; 8: string)
_GGUF_ARRAYS = {0: [0, 7, 255], 1: [-128, 0, 127], 2: [0, 65535, 3], 3: [-32768, 5, 32767], 4: [0, 2**32 - 1, 9],
                5: [-2**31, 1, 2**31 - 1], 6: [0.1, -2.5, 3.0e38], 7: [True, False, True], 10: [0, 2**64 - 1, 11],
                11: [-2**63, 12, 2**63 - 1], 12: [0.1, -1e300, 2.0]}


def _write_test_gguf(path: Path) -> list[str]:
    """A GGUF holding an array of every numeric type, a string array of ~1.6 MB (more than one of the reader's
    chunks: empty, non-ASCII and a 1.1 MB string among them), a scalar after them and one tensor."""
    import gguf
    import numpy as np

    strings = [f"▁tok{i}é日本" * (i % 40) for i in range(4000)] + ["", "x" * 1_100_000, "<end_of_turn>"]
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_key_value("test.strings", strings, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.STRING)
    for vtype, values in _GGUF_ARRAYS.items():
        w.add_key_value(f"test.array{vtype}", values, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType(vtype))
    w.add_uint32("test.after", 42)
    w.add_tensor("t.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return strings


def test_gguf_header_reads_the_arrays_asked_for_as_ggufreader_does(tmp_path):
    """read_gguf_header(arrays=...) against gguf.GGUFReader, the independent reference: every numeric type and a
    multi-chunk string array equal GGUFReader's field.contents(); arrays not asked for stay their length; what
    follows the arrays (a scalar, the tensor table, the data offset) is read the same either way. A truncated
    or crafted copy is refused with a GGUFHeaderError naming the problem."""
    from gguf import GGUFReader

    from serving.gguf_header import GGUFHeaderError, read_gguf_header

    path = tmp_path / "arrays.gguf"
    strings = _write_test_gguf(path)
    fields = GGUFReader(str(path)).fields
    keys = ["test.strings"] + [f"test.array{t}" for t in _GGUF_ARRAYS]
    full = read_gguf_header(path, arrays=keys)
    assert full.metadata["test.strings"] == fields["test.strings"].contents() == strings
    for vtype in _GGUF_ARRAYS:
        got = full.metadata[f"test.array{vtype}"]
        assert got.tolist() == fields[f"test.array{vtype}"].contents(), vtype
        assert [type(v) for v in got.tolist()] == [type(v) for v in fields[f"test.array{vtype}"].contents()], vtype
    assert full.metadata["test.array4"].tolist() == _GGUF_ARRAYS[4]  # not just equal to the reference: right
    lengths = read_gguf_header(path)
    assert lengths.metadata["test.strings"] == len(strings) and lengths.metadata["test.array6"] == 3
    part = read_gguf_header(path, arrays=["test.array6"])
    assert part.metadata["test.strings"] == len(strings) and part.metadata["test.array6"].dtype == "float32"
    for h in (full, lengths, part):
        assert h.metadata["test.after"] == 42 and h.metadata["general.architecture"] == "gemma3"
        assert [(t.name, t.shape) for t in h.tensors] == [("t.weight", (4, 3))]
        assert h.data_offset == GGUFReader(str(path)).data_offset and h.truncation() is None

    data = path.read_bytes()
    mid_strings = data.index(b"tok2001")  # inside the string array
    mid_floats = data.index(b"test.array12") + len("test.array12") + 4 + 4 + 8 + 12  # inside the f64 array's data
    for cut, problem in ((mid_strings, "a string array runs past the end of the file"),
                         (mid_floats, "header runs past the end of the file")):
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        for arrays in (keys, ()):
            with pytest.raises(GGUFHeaderError, match=problem):
                read_gguf_header(tmp_path / "cut.gguf", arrays=arrays)
    # a crafted element count, and a crafted string length, larger than the file
    at = data.index(b"test.strings") + len("test.strings") + 4 + 4  # the array's element count
    crafted = data[:at] + (2**40).to_bytes(8, "little") + data[at + 8:]
    second = strings[1].encode()
    first = data.index(len(second).to_bytes(8, "little") + second)  # the second string's length
    huge = data[:first] + (2**50).to_bytes(8, "little") + data[first + 8:]
    for bad in (crafted, huge):
        (tmp_path / "bad.gguf").write_bytes(bad)
        for arrays in (keys, ()):
            with pytest.raises(GGUFHeaderError, match="a string array runs past the end of the file"):
                read_gguf_header(tmp_path / "bad.gguf", arrays=arrays)


def test_sentencepiece_tokenizer_from_a_gguf_header_is_the_one_ggufreader_gives(tmp_path):
    """_write_sentencepiece_tokenizer reads the GGUF with serving.gguf_header; its tokenizer.model is byte for byte
    the one built (as it was before) from gguf.GGUFReader's fields, on a real SentencePiece vocabulary with
    non-ASCII and control pieces, special ids off their defaults and add_space_prefix / add_bos_token set."""
    import gguf
    import sentencepiece as spm
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as pb

    from forge_pipeline.training.base_model import _write_sentencepiece_tokenizer
    from forge_pipeline_tests.tiny_models import WORDS

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(14)) for i in range(2000)))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=400, model_type="bpe", bos_id=2, eos_id=1,
        pad_id=3, unk_id=0, byte_fallback=True, minloglevel=2, control_symbols=["<start_of_turn>", "<end_of_turn>"],
        user_defined_symbols=["café", "日本語"])
    source = pb.ModelProto()
    source.ParseFromString((tmp_path / "sp.model").read_bytes())
    path = tmp_path / "vocab.gguf"
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_tokenizer_model("llama")
    w.add_token_list([p.piece for p in source.pieces])
    w.add_token_scores([p.score for p in source.pieces])
    w.add_token_types([p.type for p in source.pieces])
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(0)
    w.add_pad_token_id(3)
    w.add_add_space_prefix(True)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()

    out = tmp_path / "hf"
    out.mkdir()
    assert _write_sentencepiece_tokenizer(path, out)

    f = GGUFReader(str(path)).fields  # the reference: the model as GGUFReader's version of the function built it
    tokens = f["tokenizer.ggml.tokens"].contents()
    ids = {n: int(f[f"tokenizer.ggml.{k}_token_id"].contents())
           for n, k in (("unk", "unknown"), ("bos", "bos"), ("eos", "eos"), ("pad", "padding"))}
    want = pb.ModelProto()
    spec = want.trainer_spec
    spec.model_type, spec.vocab_size, spec.byte_fallback = pb.TrainerSpec.BPE, len(tokens), True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = ids["unk"], ids["bos"], ids["eos"], ids["pad"]
    norm = want.normalizer_spec
    norm.name, norm.add_dummy_prefix, norm.remove_extra_whitespaces, norm.escape_whitespaces = \
        "identity", bool(f["tokenizer.ggml.add_space_prefix"].contents()), False, True
    for tok, score, ttype in zip(tokens, f["tokenizer.ggml.scores"].contents(), f["tokenizer.ggml.token_type"].contents()):
        piece = want.pieces.add()
        piece.piece, piece.score, piece.type = tok, float(score), int(ttype)
    want.pieces[ids["unk"]].type = pb.ModelProto.SentencePiece.UNKNOWN
    got = (out / "tokenizer.model").read_bytes()
    assert got == want.SerializeToString()
    written = pb.ModelProto()
    written.ParseFromString(got)
    assert [p.piece for p in written.pieces] == [p.piece for p in source.pieces]  # and the vocabulary is the source's
    assert [p.score for p in written.pieces] == [p.score for p in source.pieces]
    assert {"café", "日本語", "<end_of_turn>"} <= set(tokens)
    from transformers import AutoTokenizer

    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "GemmaTokenizer", config["tokenizer_class"]
    tok = AutoTokenizer.from_pretrained(str(out))
    assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token) == (tokens[2], tokens[1], tokens[0], tokens[3])
    assert tok("café")["input_ids"][0] != 2  # add_bos_token False: no BOS
