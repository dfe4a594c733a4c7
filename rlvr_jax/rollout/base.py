"""The rollout-engine interface shared by the in-process JAX sampler and the vLLM server engine.

Log-probability convention (used by every engine and by the learner's importance ratio):
``Completion.logprobs[i]`` is log pi(token_i | prefix) under the *raw model distribution*,
i.e. log_softmax of the model's logits at temperature 1, before any top-k / top-p truncation.
This is vLLM's default ``--logprobs-mode raw_logprobs``. The learner recomputes old-policy
log-probs under the same convention, so ratios compare like with like.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Sequence

LOGPROB_CONVENTION = "raw"


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters. ``top_k <= 0`` and ``top_p >= 1`` disable the truncations."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 256
    stop_token_ids: tuple[int, ...] = ()
    seed: int = 0
    # Optional per-prompt seeds (one per prompt of a generate call): sample s of prompt p is then a function of
    # (prompt_seeds[p], s) alone, not of p's position in the batch. Honoured by engines whose
    # ``supports_prompt_seeds`` is True; the evaluator falls back to one call per prompt elsewhere.
    prompt_seeds: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if self.prompt_seeds is not None:
            object.__setattr__(self, "prompt_seeds", tuple(int(s) for s in self.prompt_seeds))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclasses.dataclass
class Completion:
    """One sampled continuation of one prompt."""

    prompt_index: int
    sample_index: int
    token_ids: list[int]
    logprobs: list[float]  # raw-model log-prob of each sampled token (see module docstring)
    finish_reason: str  # "stop" (a stop/EOS token was sampled; it is included in token_ids) or "length"

    def __post_init__(self):
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError(
                f"Completion has {len(self.token_ids)} tokens but {len(self.logprobs)} log-probs")
        if self.finish_reason not in ("stop", "length"):
            raise ValueError(f"finish_reason must be 'stop' or 'length', got {self.finish_reason!r}")


class RolloutEngine(abc.ABC):
    """Generates completions for token-id prompts; the trainer never knows which engine it holds."""

    logprob_convention: str = LOGPROB_CONVENTION
    supports_prompt_seeds: bool = False  # honours SamplingParams.prompt_seeds

    @abc.abstractmethod
    def generate(self, prompts: Sequence[Sequence[int]], n: int,
                 params: SamplingParams) -> list[list[Completion]]:
        """Returns ``result[p][s]``: sample ``s`` of prompt ``p`` (``len(result[p]) == n``)."""

    @abc.abstractmethod
    def sync_weights(self, model_or_params: Any, version: int) -> float:
        """Makes the engine sample from the given weights from now on; returns seconds taken."""

    def close(self) -> None:
        """Releases servers, processes or device memory held by the engine."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
