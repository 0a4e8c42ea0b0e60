"""The student's rollouts through a vLLM engine beside the trainer (a module of the on_policy method): the engine
is built from the student's starting checkpoint, and before each optimizer step's first rollout it receives
the trainer's current weights (``collective_rpc`` of ``WeightSync.load_student_weights``, teachers/weights.py ->
vLLM's in-place ``reload_weights``, which maps Hugging Face names to vLLM's fused layers), so every rollout comes
from the weights being trained, never stale ones.

    engine = VLLMRollouts(cfg, model_dir)
    engine.sync(model, step)                       # once per optimizer step; a no-op when already synced
    completions = engine.generate(prompts, seeds, temperature, max_new_tokens, stop_ids)

The engine runs in its own process (vLLM's default), so the trainer keeps its threads (an in-process vLLM engine
pins torch to one thread on CPU). Each prompt samples with its own seed, so a rollout does not depend on which
other prompts share its batch or chunk. A LoRA student is synced merged (adapters folded in, then unfolded)."""

from __future__ import annotations

from cotdistill.config import TrainConfig
from cotdistill.env import cuda_available, engine_dtype, prepare_vllm_env, torch_threads_kept
from cotdistill.errors import CotdistillError, first_line
from cotdistill.teachers.weights import pack


def full_weights(model) -> list[tuple[str, object]]:
    """The weights vLLM's loader expects (Hugging Face names, on CPU). A PEFT model is merged first: the base
    names, adapters folded in; the caller's model is left unmerged."""
    try:
        from peft import PeftModel
    except ImportError:
        PeftModel = ()
    if not isinstance(model, PeftModel):
        return [(n, t.detach().cpu()) for n, t in model.state_dict().items()]
    model.merge_adapter()
    try:
        out = []
        for n, t in model.state_dict().items():
            if "lora_" in n or ".original_module." in n:
                continue
            n = n.removeprefix("base_model.model.").replace(".base_layer.", ".")
            out.append((n.replace(".modules_to_save.default.", "."), t.detach().cpu().clone()))
        return out
    finally:
        model.unmerge_adapter()


class VLLMRollouts:
    def __init__(self, cfg: TrainConfig, model_dir: str):
        o = cfg.on_policy
        prepare_vllm_env()  # the engine in its own process: the trainer keeps its threads
        from vllm import LLM

        kw = dict(model=model_dir, tokenizer=model_dir, dtype=engine_dtype(o.vllm_dtype), seed=cfg.seed,
                  enforce_eager=True, max_model_len=cfg.max_length,
                  max_num_seqs=max(1, cfg.per_device_train_batch_size),
                  worker_extension_cls="cotdistill.teachers.weights.WeightSync")
        if cuda_available():
            kw["gpu_memory_utilization"] = o.vllm_gpu_memory_utilization
        else:
            kw |= dict(kv_cache_memory_bytes=o.vllm_kv_cache_bytes, enable_chunked_prefill=False,
                       max_num_batched_tokens=max(4096, cfg.max_length))
        try:
            with torch_threads_kept():  # in this process when the user set VLLM_ENABLE_V1_MULTIPROCESSING=0
                self.llm = LLM(**kw)
        except Exception as e:
            raise CotdistillError(f"on_policy.use_vllm: the student's vLLM engine ({model_dir}) failed to start: "
                                  f"{first_line(e)}; set on_policy.use_vllm: false to roll out with transformers") \
                from e
        self.synced_step: int | None = None

    def sync(self, model, step: int) -> bool:
        """Send the trainer's weights unless this step's are there already; True if sent."""
        if self.synced_step == step:
            return False
        weights = full_weights(model)
        self.llm.collective_rpc("load_student_weights",
                                args=([n for n, _ in weights], [pack(t) for _, t in weights]))
        self.llm.reset_prefix_cache()  # cached prefixes hold the old weights' keys and values
        self.synced_step = step
        return True

    def generate(self, prompts: list[list[int]], seeds: list[int], temperature: float, max_new_tokens: int,
                 stop_ids: list[int]) -> list[list[int]]:
        """Completions as token ids, the stop token included when the rollout stopped on one (as transformers'
        generate leaves it)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(temperature=temperature, top_p=1.0, top_k=0, max_tokens=max_new_tokens, seed=s,
                                 stop_token_ids=list(stop_ids), ignore_eos=True, skip_special_tokens=False)
                  for s in seeds]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
        comps = []
        for o in outs:
            ids = list(o.outputs[0].token_ids)
            cut = next((i + 1 for i, t in enumerate(ids) if t in stop_ids), len(ids))
            comps.append(ids[:cut])
        return comps

    def close(self) -> None:
        from cotdistill.teachers.vllm_offline import shutdown_engine

        shutdown_engine(getattr(self, "llm", None))
        self.llm = None
