"""Stage configs (pydantic models), one module per stage beside it, with every range check and exclusive
option in the model; this package re-exports them. Reading YAML with overrides and error formatting are
``cotdistill.loading``.

    cfg = load_config(GenerateConfig, "data/configs/generate_demo.yaml", ["sampling.n=8"])

    common.py    sources, teacher backends, sampling, prompt          (several stages)
    generate.py  GenerateConfig, ShardConfig, DistributedConfig        cotdistill generate
    filter.py    FilterConfig, DecontamConfig                          cotdistill filter
    logits.py    LogitsConfig                                          cotdistill logits
    synthesize.py SynthesizeConfig and the problem filters' blocks     cotdistill synthesize
    train.py     TrainConfig and its method option blocks              cotdistill train
    on_policy.py on_policy's options and teacher mix (part of train.py)
    eval.py      EvalConfig, EvalModel, EvalBenchmark                  cotdistill eval
    run.py       RunConfig: the whole pipeline                         cotdistill run
"""

from cotdistill.config.common import (
    DEFAULT_CHUNK_TOKENS,
    FieldMap,
    HFSource,
    OpenAITeacher,
    PromptConfig,
    ReasoningGymSource,
    SamplingConfig,
    SourceConfig,
    StrictModel,
    TeacherConfig,
    VLLMTeacher,
    chunk_size,
)
from cotdistill.config.eval import EvalBenchmark, EvalConfig, EvalModel
from cotdistill.config.filter import DecontamConfig, FilterConfig
from cotdistill.config.generate import DistributedConfig, GenerateConfig, ShardConfig
from cotdistill.config.logits import LogitsConfig
from cotdistill.config.run import (
    PTQStage,
    RunConfig,
    RunEval,
    RunStudent,
    RunTargets,
    StudentFromTeacher,
    StudentInit,
    StudentSpec,
    SweepConfig,
    size_label,
)
from cotdistill.config.synthesize import Consistency, Difficulty, EvolveRound, ProblemChecks, SynthesizeConfig
from cotdistill.config.train import (
    OPTIONAL_DEPENDENCIES,
    AttentionTerm,
    FeatureTerm,
    GKDOptions,
    KDOptions,
    LayerMap,
    LoraConfig,
    OnPolicyOptions,
    QATConfig,
    RelationTerm,
    TeacherWeight,
    TemperatureSchedule,
    TrainConfig,
    TrainGKD,
    TrainKD,
    TrainLogitKD,
    TrainOnPolicy,
    TrainSFT,
    optional_dependency_problems,
)

__all__ = [
    "AttentionTerm", "Consistency", "Difficulty", "EvolveRound", "ProblemChecks", "SynthesizeConfig",
    "DEFAULT_CHUNK_TOKENS", "DecontamConfig", "DistributedConfig", "EvalBenchmark", "EvalConfig",
    "EvalModel", "FeatureTerm", "FieldMap", "FilterConfig", "GKDOptions", "GenerateConfig", "HFSource",
    "KDOptions", "LayerMap", "LogitsConfig", "LoraConfig", "OPTIONAL_DEPENDENCIES", "OpenAITeacher", "PTQStage",
    "PromptConfig", "QATConfig", "ReasoningGymSource", "RelationTerm", "RunConfig", "RunEval", "RunStudent",
    "RunTargets", "SamplingConfig", "ShardConfig", "SourceConfig", "StrictModel", "StudentFromTeacher",
    "StudentInit", "StudentSpec", "SweepConfig", "TeacherConfig", "TeacherWeight", "TemperatureSchedule",
    "TrainConfig", "TrainGKD", "TrainKD", "TrainLogitKD", "TrainOnPolicy", "OnPolicyOptions", "TrainSFT",
    "VLLMTeacher", "chunk_size", "optional_dependency_problems", "size_label",
]
