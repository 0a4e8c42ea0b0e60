"""Real tokenizers, chat templates and vocabulary sizes on tiny models of the real architectures, trained in
bf16 autocast as on GPUs: Qwen2 with DeepSeek-R1-Distill-Qwen-7B's 152k vocabulary and R1 chat template, Gemma 3
with its 262k vocabulary, Llama with SmolLM2's 49k vocabulary and ChatML template. The tokenizers come from the
headers of GGUF files that registry packages ship (scripts/setup_env.sh installs them; cotdistill/gguf.py)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_train import cfg

from cotdistill import train
from cotdistill.errors import CotdistillError

# about 2 minutes: tokenizers of 49k-262k tokens converted from GGUF headers, 9 trainings
pytestmark = pytest.mark.slow

GEMMA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>"
                  "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
                  "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
# R1's turn format without its "keep only what follows </think>" rule (\uff5c: fullwidth bar, \u2581: lower block)
R1_KEEPING_REASONING = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<\uff5cUser\uff5c>{{ m['content'] }}"
    "{% else %}<\uff5cAssistant\uff5c>{{ m['content'] }}<\uff5cend\u2581of\u2581sentence\uff5c>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<\uff5cAssistant\uff5c>{% endif %}"
)


def _tokenizer(name, out):
    from transformers import AutoTokenizer

    from cotdistill import gguf

    try:
        path = gguf.smollm2_gguf() if name == "smollm2" else gguf.header_chunk(name)
    except CotdistillError as e:
        pytest.skip(str(e))
    tok = AutoTokenizer.from_pretrained(gguf.tokenizer_from_header(path, out / "gguf-tok"))
    if name == "gemma3":
        tok.chat_template = GEMMA_TEMPLATE  # the GGUF header carries none
    if name == "smollm2":
        tok.pad_token = "<|endoftext|>"  # its pad is its EOS: the collator would mask the trained end of turn
    return tok


def _model(arch, vocab, hidden, layers, seed, tok):
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=False))
    if arch == "gemma3":
        return Gemma3ForCausalLM(Gemma3TextConfig(**common, head_dim=32, sliding_window=64))
    return LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True))


CASES = {  # name: (architecture, model rows)
    "r1_distill_qwen": ("qwen2", 152128),  # the GGUF's 152,064 tokens + its converted BOS/EOS, padded to 64
    "gemma3": ("gemma3", 262144),
    "smollm2": ("llama", 49152),
}


@pytest.fixture(scope="module", params=list(CASES))
def real(request, tmp_path_factory):
    name = request.param
    arch, rows = CASES[name]
    root = tmp_path_factory.mktemp(name)
    tok = _tokenizer(name, root)
    dirs = {}
    for role, hidden, layers, seed in (("student", 64, 1, 0), ("teacher", 128, 2, 1)):
        d = root / role
        _model(arch, rows, hidden, layers, seed, tok).save_pretrained(d)
        tok.save_pretrained(d)
        dirs[role] = d
    return name, dirs


def _changed_share(before, after):
    """Share of weights that moved, over the transformer blocks and norms (embedding rows of tokens absent from
    the data get no gradient, and at these vocabularies they are nearly all rows)."""
    moved = total = 0
    for k, w0 in before.items():
        if "embed_tokens" in k or "lm_head" in k:
            continue
        moved += int((w0.float() != after[k].float()).sum())
        total += w0.numel()
    return moved / total


@pytest.mark.parametrize("method", ["sft", "logit_kd", "kd", "kd_selective"])
def test_real_vocabulary_trains_in_bf16(real, tmp_path, method):
    name, dirs = real
    kw = {}
    if name == "r1_distill_qwen":
        kw["chat_template"] = R1_KEEPING_REASONING  # R1's own template drops the reasoning: see the last test
    if method == "kd":
        kw.update(teacher=str(dirs["teacher"]), features={"weight": 0.5})
    if method == "kd_selective":  # two teachers weighed per example, smoothed targets, a confidence penalty
        if name != "r1_distill_qwen":
            pytest.skip("the per-example teacher weights are checked at one real vocabulary (152k, untied head)")
        kw.update(teachers=[{"model": str(dirs["teacher"])}, {"model": str(dirs["student"])}],
                  kd={"selection": "gold_likelihood", "label_smoothing": 0.1, "confidence_penalty": 0.05})
        method = "kd"
    if method == "logit_kd":
        # a teacher on the same (overridden) template as the student, scoring the kept traces
        import shutil

        from test_train import dataset_dir

        from cotdistill import logits
        from cotdistill.config import LogitsConfig

        t = tmp_path / "teacher"
        shutil.copytree(dirs["teacher"], t)
        if "chat_template" in kw:
            (t / "chat_template.jinja").write_text(kw["chat_template"])
        logits.run(LogitsConfig(teacher=str(t), filter_dir=str(dataset_dir(tmp_path)), output_dir=str(tmp_path / "c"),
                                top_k=4, device="cpu", dtype="float32", progress=False))
        kw["logprobs"] = str(tmp_path / "c")
    c = cfg(dirs["student"], tmp_path, method=method, bf16=True, max_steps=3, learning_rate=1e-5,
            lr_scheduler_type="constant", **kw)
    s = train.run(c)
    assert s["steps"] == 3 and all(0 < x < 100 for x in (s["first_logged_loss"], s["last_logged_loss"]))
    final = tmp_path / "out/final"
    before = load_file(str(dirs["student"] / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    assert _changed_share(before, after) > 0.99
    assert json.loads((final / "config.json").read_text())["vocab_size"] == CASES[name][1]
    from cotdistill.chat import stop_token_problem

    assert stop_token_problem(final) is None


def test_r1_chat_template_drops_the_reasoning_and_is_refused(real, tmp_path):
    name, dirs = real
    if name != "r1_distill_qwen":
        pytest.skip("R1's template only")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(dirs["student"])
    assert "</think>" in tok.chat_template  # the real template, from the GGUF header
    with pytest.raises(CotdistillError, match=r"the student's chat template rewrites the assistant turn \(it keeps "
                                              r"\d+ of \d+ characters"):
        train.run(cfg(dirs["student"], tmp_path, max_steps=1))


def test_a_float32_engine_generates_over_the_real_vocabulary_with_seeds_and_logprobs(real, tmp_path):
    """What an AVX2-only CPU serves (`dtype: auto` starts float32 engines there, env.engine_dtype): vLLM in float32
    at R1's 152k vocabulary, per-sample seeds reproducing and top-k logprobs over the whole vocabulary."""
    name, dirs = real
    if name != "r1_distill_qwen":
        pytest.skip("one real vocabulary: R1's 152k")
    import numpy as np
    from conftest import KV_BYTES, ROOT

    from cotdistill import generate
    from cotdistill.config import GenerateConfig
    from cotdistill.records import TokenLogprobs, Trace
    from cotdistill.teachers import make_teacher

    def config(out):
        return GenerateConfig.model_validate({
            "source": {"kind": "hf", "path": str(ROOT / "data/arithmetic_test.jsonl"), "fields": {"id": "id"},
                       "limit": 3},
            "prompt": {"template": "arithmetic_cot"},
            "teacher": {"backend": "vllm", "model": str(dirs["teacher"]), "dtype": "float32", "max_model_len": 256,
                        "kv_cache_memory_bytes": KV_BYTES, "enforce_eager": True},
            "sampling": {"n": 2, "temperature": 1.0, "max_tokens": 8, "logprobs": 4, "seed": 5},
            "output_dir": str(out), "progress": False})

    engine = make_teacher(config(tmp_path / "a").teacher, seed=5, need_logprobs=True)
    try:
        for out in ("a", "b"):
            assert generate.run(config(tmp_path / out), teacher=engine)["traces"] == 6
    finally:
        engine.close()
    read = lambda out, cls, f: [cls.model_validate_json(x) for x in (tmp_path / out / f).read_text().splitlines()]
    traces = read("a", Trace, "traces.jsonl")
    assert {t.teacher.dtype for t in traces} == {"float32"}
    assert [t.completion for t in traces] == [t.completion for t in read("b", Trace, "traces.jsonl")]
    ids = np.concatenate([lp.arrays()["top_ids"].ravel() for lp in read("a", TokenLogprobs, "logprobs.jsonl")])
    assert ids.max() < CASES[name][1] and ids.max() > 49152  # a random model's top tokens span the whole vocabulary
    for lp in read("a", TokenLogprobs, "logprobs.jsonl"):
        a = lp.arrays()
        assert np.isfinite(a["top_logprobs"]).all() and np.all(np.diff(a["top_logprobs"], axis=1) <= 1e-6)
