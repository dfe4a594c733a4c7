"""Shared pieces of the JaxSampler tests: a toy cache-using decoder, sampler construction per scheduler, and
full-forward references (greedy decoding, teacher-forced raw log-probs)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import special

from rlvr_jax.rollout.jax_sampler import JaxSampler


class ToyDecoder(nnx.Module):
    """A cache-using toy LM: ``logits_t = (E[x_t] + mean_{s attended} C[x_s]) @ W + B[pos_t]``.

    "Attended" = real tokens at or before t (the cache holds ``C[x_s]`` per slot), so correct output
    needs correct left padding, positions, cache slots and kv masks.
    """

    def __init__(self, vocab: int = 16, dim: int = 8, max_pos: int = 128, *, rngs: nnx.Rngs):
        init = lambda *shape: nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32))  # noqa: E731
        self.embed, self.ctx, self.out, self.pos_bias = init(vocab, dim), init(vocab, dim), init(dim, vocab), \
            init(max_pos, vocab)

    def _head(self, tokens, ctx_mean, positions):
        return (self.embed[...][tokens] + ctx_mean) @ self.out[...] + self.pos_bias[...][positions]

    def __call__(self, input_ids, attention_mask=None):
        mask = jnp.ones_like(input_ids) if attention_mask is None else attention_mask
        positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
        ctx = self.ctx[...][input_ids] * mask[..., None]
        mean = jnp.cumsum(ctx, axis=1) / jnp.maximum(jnp.cumsum(mask, axis=1), 1)[..., None]
        return self._head(input_ids, mean, positions)

    def init_cache(self, batch_size, max_len):
        return {"c": jnp.zeros((batch_size, max_len, self.ctx.shape[1]), jnp.float32)}

    def prefill(self, input_ids, attention_mask, cache, last_only=False):
        ctx = self.ctx[...][input_ids] * attention_mask[..., None]
        logits = self(input_ids, attention_mask)
        return logits[:, -1] if last_only else logits, {"c": cache["c"].at[:, :input_ids.shape[1]].set(ctx)}

    def decode_step(self, tokens, positions, cache_index, kv_mask, cache):
        new = self.ctx[...][tokens]
        if jnp.ndim(cache_index) == 1:  # per-row slots (continuous scheduler)
            c = cache["c"].at[jnp.arange(tokens.shape[0]), cache_index].set(new)
        else:
            c = jax.lax.dynamic_update_slice_in_dim(cache["c"], new[:, None], cache_index, axis=1)
        w = kv_mask.astype(jnp.float32)[..., None]
        mean = jnp.sum(c * w, axis=1) / jnp.sum(w, axis=1)
        return self._head(tokens, mean, positions), {"c": c}


PROMPTS = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5, 8, 9, 7], [2]]


@pytest.fixture(autouse=True)
def _float32_matmuls():
    """Full float32 matmuls (no TF32 on GPU), so the 1e-5 log-prob checks hold on any backend."""
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="module")
def toy():
    return ToyDecoder(rngs=nnx.Rngs(0))


SCHEDULERS = ("static", "continuous")


def make_sampler(model, scheduler, batch_buckets, **kw):
    """The continuous sampler gets a quarter of the slots (at least 2), refilled 2 rows at a time, queues of one
    slot count per call and at most 3 steps per call, so the tests exercise refills, queue hand-overs, resumed
    calls and slot reuse."""
    if scheduler == "continuous":
        kw = dict(kw, decode_steps=3, queue_slots=1, refill_rows=kw.pop("refill_rows", 2))
        batch_buckets = [max(2, b // 4) for b in batch_buckets]
    return JaxSampler(model, pad_id=0, batch_buckets=batch_buckets, scheduler=scheduler, **kw)


@pytest.fixture(scope="module", params=SCHEDULERS)
def toy_sampler(toy, request):
    return make_sampler(toy, request.param, [16], max_prompt_len=16, max_new_tokens_limit=16)


FORWARD_LEN = 32


@jax.jit
def _forward(graphdef, state, seq):
    return nnx.merge(graphdef, state)(seq)


def forward_logits(model, seq):
    """Full-forward logits [len(seq), V] of one sequence, right-padded to a fixed length (one compile).

    Right padding cannot change earlier positions of a causal model, so the first len(seq) rows are exact.
    """
    padded = np.zeros((1, FORWARD_LEN), np.int32)
    padded[0, :len(seq)] = seq
    graphdef, state = nnx.split(model)
    return np.asarray(_forward(graphdef, state, jnp.asarray(padded)), np.float64)[0, :len(seq)]


def full_forward_logps(model, prompt, completion):
    """Teacher-forced raw log-probs of ``completion`` after ``prompt`` from one full forward (float64 softmax)."""
    logits = forward_logits(model, prompt + completion[:-1])[len(prompt) - 1:]
    return special.log_softmax(logits, axis=-1)[np.arange(len(completion)), completion]


def greedy_reference(model, prompt, steps, stop_ids=()):
    """Step-by-step argmax of the full forward re-run on the growing sequence."""
    seq = list(prompt)
    for _ in range(steps):
        tok = int(np.argmax(forward_logits(model, seq)[-1]))
        seq.append(tok)
        if tok in stop_ids:
            break
    return seq[len(prompt):]
