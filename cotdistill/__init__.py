"""cotdistill: distill chain-of-thought reasoning from a vLLM-served teacher into a small student.

Stages (each a module with ``run(config) -> summary``, and a CLI subcommand):
    generate  problems -> prompt template -> teacher (vLLM offline or OpenAI-compatible server) -> traces
    filter    traces -> verify (pure, pooled) -> funnel of filters -> TRL dataset + dataset card
    train     TRL SFT / GKD / on-policy distillation, or KD from cached teacher logprobs
    evaluate  models x benchmarks through vLLM -> pass@1/pass@k/maj@k with 95% CIs; report.py plots
"""

__version__ = "0.1.0"
