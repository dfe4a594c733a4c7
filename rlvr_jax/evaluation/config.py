"""Evaluation settings, the papers' sampling presets and the default k list.

Presets (NSR paper Sec. 3.1): ``qwen25math`` samples n=256 at temperature 0.6, top-p 0.95; ``qwen3`` samples
n=64 at temperature 0.7, top-p 0.8, top-k 20. Each also takes the prompt template its model is trained with
(:func:`training_template`: qwen_boxed for Qwen2.5-Math, qwen3_nothink for Qwen3). The k list defaults to 1, 2, 4, ... up to n (n itself added
when it is not a power of two).
"""
from __future__ import annotations

import dataclasses

from rlvr_jax.rollout.base import SamplingParams

SAMPLING_PRESETS: dict[str, dict] = {
    "qwen25math": dict(n=256, temperature=0.6, top_p=0.95, top_k=-1),
    "qwen3": dict(n=64, temperature=0.7, top_p=0.8, top_k=20),
}

# Fields that define the samples on disk: resuming into an output dir requires them to match.
RESUME_KEYS = ("n", "temperature", "top_p", "top_k", "max_new_tokens", "seed", "template", "greedy", "seeding",
               "policy", "engine")
SEEDING = "per-problem-v1"  # sample s of problem p uses problem_seed(seed, p.id) + s (rlvr_jax.evaluation.runner)


def default_ks(n: int) -> tuple[int, ...]:
    """1, 2, 4, ... <= n, plus n."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return tuple(ks)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    n: int = 16
    ks: tuple[int, ...] = ()            # empty = default_ks(n)
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = -1
    max_new_tokens: int = 3072
    seed: int = 0
    template: str = "qwen_boxed"
    greedy: bool = True                 # also decode greedily once per problem (greedy accuracy)
    max_problems: int = 0               # 0 = all
    prompt_batch_size: int = 8          # problems per engine.generate call
    grade_timeout_s: float = 10.0
    grade_workers: int | None = None
    save_text: bool = False             # keep the decoded responses in the records
    seeding: str = SEEDING              # how samples are seeded (a resume check: older outputs seeded by batch)
    policy: str = ""                    # what is evaluated (checkpoint path), checked on resume when set
    engine: str = ""                    # jax | vllm (the same seeds give different samples per engine)

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"EvalConfig.n must be >= 1, got {self.n}")
        bad = [k for k in self.ks if not 1 <= k <= self.n]
        if bad:
            raise ValueError(f"EvalConfig.ks {bad} outside [1, n={self.n}]")
        if self.prompt_batch_size < 1:
            raise ValueError(f"EvalConfig.prompt_batch_size must be >= 1, got {self.prompt_batch_size}")
        SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                       max_new_tokens=self.max_new_tokens)  # validates

    @property
    def resolved_ks(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.ks))) if self.ks else default_ks(self.n)

    def sampling_params(self, stop_token_ids=(), greedy: bool = False) -> SamplingParams:
        if greedy:
            return SamplingParams(temperature=0.0, max_new_tokens=self.max_new_tokens,
                                  stop_token_ids=tuple(stop_token_ids), seed=self.seed)
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              max_new_tokens=self.max_new_tokens, stop_token_ids=tuple(stop_token_ids),
                              seed=self.seed)

    def resume_fingerprint(self) -> dict:
        return {k: getattr(self, k) for k in RESUME_KEYS}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ks"] = list(self.resolved_ks)
        return d


def training_template(model: str) -> str:
    """The prompt template the training presets use for ``model`` (rlvr_jax.config.presets.set_model): one
    prompt per model, in training and in evaluation (a preset named after a model evaluates with it)."""
    from rlvr_jax.config.base import get_base_config
    from rlvr_jax.config.presets import set_model
    return set_model(get_base_config(), model).data.template


def apply_preset(cfg: EvalConfig, preset: str) -> EvalConfig:
    """``cfg`` with the sampling preset's n / temperature / top-p / top-k and its model's training template."""
    if preset not in SAMPLING_PRESETS:
        raise ValueError(f"unknown sampling preset {preset!r}; expected one of {sorted(SAMPLING_PRESETS)}")
    return dataclasses.replace(cfg, **SAMPLING_PRESETS[preset], template=training_template(preset))
