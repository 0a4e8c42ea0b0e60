"""cotdistill: distill chain-of-thought reasoning from a vLLM-served teacher into a small student.

Stages (each a module with ``run(config) -> summary`` and a CLI subcommand; configs in ``cotdistill/config/``):
    generate  problems -> prompt template -> teacher (vLLM offline, OpenAI-compatible server, Ray replicas) -> traces
    filter    traces -> verify (pure, pooled) -> funnel of filters -> TRL dataset + dataset card
    logits    the teacher's top-k logprobs of the kept traces, cached for logit_kd
    train     TRL SFT / GKD / on-policy distillation, KD from cached logprobs, live-teacher KD, PTQ
    evaluate  models x benchmarks through vLLM -> pass@1/pass@k/maj@k with 95% CIs (results.py)
    report    report.md with plots (plots.py)
``run.py`` executes a whole ``plan.py`` of stages. Stages share leaf modules (chat, artifacts, records, store,
loading, env, sampling, ...) and never import each other (tests/test_architecture.py).
"""

__version__ = "0.1.0"
