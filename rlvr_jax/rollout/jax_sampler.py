"""In-process JAX rollout engine: batched prefill + KV-cache decode loop in one compiled function.

The model is any flax.nnx module implementing the decoder contract of ``rlvr_jax.models``:

* ``init_cache(batch_size, max_len) -> cache`` (a pytree of arrays),
* ``prefill(input_ids[B,T], attention_mask[B,T], cache, last_only=False) -> (logits[B,T,V] f32, cache)`` for
  left-padded prompts, writing K/V into cache slots ``[0, T)``; with ``last_only=True`` the logits are the
  last column's, ``[B, V]``,
* ``decode_step(tokens[B], positions[B], cache_index, kv_mask[B,L], cache) -> (logits[B,V] f32, cache)``
  writing K/V at slot ``cache_index`` and attending to the slots where ``kv_mask == 1``.

Layout of one compiled call, for a batch bucket ``B``, prompt bucket ``P`` and new-token bucket ``N``
(cache length ``L = P + N``)::

    slots  [0 ........ P)                  [P ......... P+N)
           left-padded prompts             generated tokens; step t writes slot P+t-1
    position of generated token j = prompt_len + j   (prompt positions are 0..prompt_len-1)

``prefill(..., last_only=True)`` runs all ``P`` prompt columns in one pass (one read of the weights) and
unembeds only column ``P-1`` (a real token in every row, thanks to left padding; a ``[B, P, V]`` unembedding
would, for a 150k vocabulary, dwarf everything else), giving the logits of token 0. Each later token t comes
from one ``decode_step`` that feeds token t-1. The decode loop is a ``lax.while_loop`` that stops when every
sequence is done (a stop token was emitted, or ``max_new_tokens`` reached), so finished batches cost nothing
more.
The KV cache is allocated inside the compiled function and lives only in the while-loop carry, which
XLA updates in place: no cache buffer crosses the jit boundary (nothing to donate, no copy, no host
round trip) and no cache memory stays resident between calls, leaving it free for the train step.

Shapes are bucketed so that a new batch recompiles only when it falls into a new bucket:
batch rows (prompts x n) round up to ``batch_buckets`` (powers of two by default, capped at
``max_batch_size``; larger requests are split into chunks), prompt length to ``prompt_buckets``,
``max_new_tokens`` to ``new_token_buckets`` (the loop bound itself is traced), and the stop-id list to a
power of two. Sampling parameters (temperature, top-k, top-p, seed) are traced scalars: changing them
never recompiles. ``num_compilations`` counts traces of the generate function.

Randomness: sequence ``r = prompt_index * n + sample_index`` at step ``t`` uses
``fold_in(fold_in(key(seed), r), t)``, so the same request with the same seed gives identical output
and samples do not depend on chunking. With ``params.prompt_seeds`` the row id is instead
``(prompt_seeds[p] + sample_index) mod 2**32``, so a sample depends on its prompt's seed, not on its position
in the batch (the evaluator's per-problem seeds). Log-probs follow the RAW convention of
``rlvr_jax.rollout.base`` (log_softmax of the untempered, untruncated logits).

Schedulers (``scheduler=``, config ``rollout.jax.scheduler``): ``'static'`` is the layout above, one compiled
call per chunk of rows, each chunk decoding until its longest row is done (finished rows idle meanwhile);
``'continuous'`` (:mod:`rlvr_jax.rollout.continuous`) keeps ``B`` slots busy: a finished row's slot is
refilled with the next pending request inside the compiled loop. Both give each request the same tokens
and log-probs for a seed; ``last_stats`` reports useful tokens, slot steps and their ratio (utilisation).

With a ``mesh``, rows are sharded over the mesh axes of the ``batch`` rule of the rule set (``rules``, default
the rules active at construction: ``data`` x ``fsdp`` unless a :func:`rlvr_jax.sharding.use_rules` block says
otherwise) and the cache follows the same rules (:mod:`rlvr_jax.rollout.rows`); activations traced inside
use them too. The weights keep whatever sharding the model has.

The sampler is layout-agnostic: it finds each cache leaf's batch axis from shapes (and shards the other
cache dimensions by the model's ``cache_logical_axes()`` when it has one), so a model with
``decode_attention_impl='pallas'`` (head-major ``[B, K, S, D]`` cache, decode attention over the filled
slot range only) works unchanged. That kernel needs every cache length ``P + N`` to be a multiple of 16
(checked here at construction), and under a mesh it runs in ``shard_map`` over the ``batch`` logical
axis of the same rule set.
"""
from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlvr_jax.batch import left_pad
from rlvr_jax.rollout.stop import check_stop
from rlvr_jax.rollout import sampling_ops
from rlvr_jax.rollout.base import Completion, RolloutEngine, SamplingParams
from rlvr_jax.rollout.buckets import check_buckets, pick_bucket, power_of_two_buckets  # noqa: F401 (re-exported)
from rlvr_jax.rollout.rows import RowSharding
from rlvr_jax.sharding import to_host

SCHEDULERS = ("static", "continuous")
DEFAULT_SCHEDULER = "continuous"


class JaxSampler(RolloutEngine):
    """Rollout engine that samples from an in-process flax.nnx decoder (see module docstring).

    Args:
      model: nnx module implementing ``init_cache`` / ``prefill`` / ``decode_step``.
      pad_id: token id used for left padding and for positions after a sequence ended.
      eos_token_ids: stop ids always in force, in addition to ``SamplingParams.stop_token_ids``.
      max_batch_size: the most rows (prompts x n) per compiled call; larger requests are chunked.
      batch_buckets: allowed batch sizes (default: powers of two from 1 up to ``max_batch_size``); when
        given, its largest entry is the chunk size. With a mesh, buckets round up to multiples of the
        number of batch shards.
      max_prompt_len: longest prompt accepted.
      prompt_buckets: allowed padded prompt lengths (default: powers of two from 16 up to ``max_prompt_len``).
      max_new_tokens_limit: the largest ``SamplingParams.max_new_tokens`` accepted.
      new_token_buckets: allowed decode-budget sizes (default: powers of two from 16 up to the limit).
      mesh: optional ``jax.sharding.Mesh``; rows are split over the mesh axes of the ``batch`` rule.
      rules: the sharding rule set (:func:`rlvr_jax.sharding.resolve_rules`; default: the active rules).
      scheduler: ``'static'`` (each chunk of rows decodes until its longest row is done) or ``'continuous'``
        (a finished row's slot is refilled with the next pending request; :mod:`rlvr_jax.rollout.continuous`).
        Both give the same tokens and log-probs for the same seed; the default is continuous (docs/performance.md).
      decode_steps: continuous only: the most decode steps per compiled call (the host then resumes it).
      refill_rows: continuous only: requests prefilled per refill (default: an eighth of the slots).
      queue_slots: continuous only: requests handed to one compiled call, in multiples of the slot count.
    """

    supports_prompt_seeds = True

    def __init__(self, model: nnx.Module, *, pad_id: int = 0, eos_token_ids: Sequence[int] = (),
                 max_batch_size: int = 256, batch_buckets: Optional[Sequence[int]] = None,
                 max_prompt_len: int = 4096, prompt_buckets: Optional[Sequence[int]] = None,
                 max_new_tokens_limit: int = 4096, new_token_buckets: Optional[Sequence[int]] = None,
                 mesh: Optional[jax.sharding.Mesh] = None, rules=None,
                 scheduler: str = DEFAULT_SCHEDULER, decode_steps: int = 4096, refill_rows: Optional[int] = None,
                 queue_slots: int = 2):
        for name in ("init_cache", "prefill", "decode_step"):
            if not callable(getattr(model, name, None)):
                raise TypeError(f"JaxSampler needs a model with a {name}() method; {type(model).__name__} has none")
        if pad_id < 0:
            raise ValueError(f"pad_id must be a non-negative token id, got {pad_id}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        self.scheduler = scheduler
        self.pad_id = int(pad_id)
        self.eos_token_ids = tuple(int(t) for t in eos_token_ids)
        self.mesh = mesh
        self.rows = RowSharding(model, mesh, rules)
        self._rows_multiple = self.rows.multiple

        self.batch_buckets = check_buckets(
            batch_buckets if batch_buckets is not None else power_of_two_buckets(1, max_batch_size), "batch_buckets")
        self.max_batch_size = max(self.batch_buckets)
        if any(b % self._rows_multiple for b in self.batch_buckets):
            # Each bucket must split evenly over the batch axes of the mesh.
            self.batch_buckets = tuple(sorted({-(-b // self._rows_multiple) * self._rows_multiple
                                               for b in self.batch_buckets}))
            self.max_batch_size = max(self.batch_buckets)
        self.prompt_buckets = check_buckets(
            prompt_buckets if prompt_buckets is not None
            else power_of_two_buckets(min(16, max_prompt_len), max_prompt_len), "prompt_buckets")
        self.new_token_buckets = check_buckets(
            new_token_buckets if new_token_buckets is not None
            else power_of_two_buckets(min(16, max_new_tokens_limit), max_new_tokens_limit), "new_token_buckets")

        if getattr(getattr(model, "config", None), "decode_attention_impl", None) == "pallas":
            from rlvr_jax.models.decode_attention import choose_blocks
            for p in self.prompt_buckets:
                for n in self.new_token_buckets:
                    try:
                        choose_blocks(p + n)
                    except ValueError as e:
                        raise ValueError(f"prompt bucket {p} + new-token bucket {n}: {e} (prompt_buckets "
                                         f"{self.prompt_buckets}, new_token_buckets {self.new_token_buckets})") from e

        self._graphdef, self._state = nnx.split(model)
        self._version = 0
        self.num_compilations = 0
        self._generate_jit = jax.jit(self._generate_fn, static_argnames=("num_new_bucket",))
        self.last_stats: dict = {}
        from rlvr_jax.rollout.continuous import ContinuousScheduler
        self._continuous = ContinuousScheduler(self, decode_steps=decode_steps, refill_rows=refill_rows,
                                                queue_slots=queue_slots)

    # ------------------------------------------------------------------ public API
    @property
    def version(self) -> int:
        """The ``version`` passed to the last ``sync_weights`` (0 for the construction weights)."""
        return self._version

    def generate(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams, *,
                 max_new_tokens_per_prompt: Optional[Sequence[int]] = None) -> list[list[Completion]]:
        """``result[p][s]`` (see :class:`RolloutEngine`). ``max_new_tokens_per_prompt`` optionally caps each
        prompt's samples below ``params.max_new_tokens`` (benchmarks: a long-tailed length workload).
        ``last_stats`` then holds ``useful_tokens``, ``slot_steps`` (rows x decode steps run, padding rows
        included), ``utilisation`` (their ratio) and ``compiled_calls`` of this call."""
        if n < 1:
            raise ValueError(f"n (samples per prompt) must be >= 1, got {n}")
        if self._state is None:
            raise RuntimeError("JaxSampler was closed; create a new one")
        prompts = [list(map(int, p)) for p in prompts]
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
            if min(p) < 0:
                raise ValueError(f"prompt {i} contains a negative token id {min(p)}")
            if len(p) > max(self.prompt_buckets):
                raise ValueError(f"prompt {i} has {len(p)} tokens, more than the largest prompt bucket "
                                 f"{max(self.prompt_buckets)} (raise max_prompt_len)")
        caps = [params.max_new_tokens] * len(prompts) if max_new_tokens_per_prompt is None else \
            [int(c) for c in max_new_tokens_per_prompt]
        if len(caps) != len(prompts) or not all(1 <= c <= params.max_new_tokens for c in caps):
            raise ValueError(f"max_new_tokens_per_prompt needs one value in [1, {params.max_new_tokens}] per prompt "
                             f"({len(prompts)} prompts), got {len(caps)} values, range "
                             f"[{min(caps, default=None)}, {max(caps, default=None)}]")
        self._check_weights_alive()
        num_new_bucket = pick_bucket(params.max_new_tokens, self.new_token_buckets, "max_new_tokens")
        stop_ids = sorted(set(self.eos_token_ids) | set(params.stop_token_ids))
        stop_arr = np.full((max(4, 1 << max(0, len(stop_ids) - 1).bit_length()),), -1, np.int32)
        stop_arr[:len(stop_ids)] = stop_ids

        rows = [(p, s) for p in range(len(prompts)) for s in range(n)]
        if params.prompt_seeds is not None and len(params.prompt_seeds) != len(prompts):
            raise ValueError(f"{len(params.prompt_seeds)} prompt_seeds for {len(prompts)} prompts")

        def row_id(p: int, s: int) -> int:  # as the int32 holding the same 32 bits (row_keys reads uint32)
            r = p * n + s if params.prompt_seeds is None else (params.prompt_seeds[p] + s) % (1 << 32)
            return r - (1 << 32) if r >= (1 << 31) else r
        args = ([prompts[p] for p, _ in rows], [row_id(p, s) for p, s in rows], [caps[p] for p, _ in rows])
        if self.scheduler == "continuous":
            outs, self.last_stats = self._continuous.run(*args, params, stop_arr, num_new_bucket)
        else:
            outs, self.last_stats = self._run_static(*args, params, stop_arr, num_new_bucket)
        results: list[list[Optional[Completion]]] = [[None] * n for _ in prompts]
        for (p, s), (toks, logps, stopped) in zip(rows, outs):
            results[p][s] = Completion(prompt_index=p, sample_index=s, token_ids=toks, logprobs=logps,
                                       finish_reason="stop" if stopped else "length")
        return results  # type: ignore[return-value]

    def sync_weights(self, model_or_params: Any, version: int) -> float:
        """Samples from ``model_or_params`` (an nnx module or the ``nnx.State`` of one) from now on.

        The new state must have the structure, shapes and dtypes of the current one, so no
        recompilation happens; leaves are moved to the current leaves' shardings when they differ.
        The sampler keeps references (no copy): if the trainer later donates or deletes these buffers,
        call ``sync_weights`` again before the next ``generate``. Returns the seconds taken.
        """
        t0 = time.perf_counter()
        if self._state is None:
            raise RuntimeError("JaxSampler was closed; create a new one")
        if isinstance(model_or_params, nnx.Module):
            graphdef, state = nnx.split(model_or_params)
            if graphdef != self._graphdef:
                raise ValueError("sync_weights got a model whose structure differs from the sampler's model")
        else:
            state = model_or_params
        old_paths = jax.tree_util.tree_flatten_with_path(self._state)
        new_paths = jax.tree_util.tree_flatten_with_path(state)
        if old_paths[1] != new_paths[1]:
            raise ValueError("sync_weights got parameters whose tree structure differs from the sampler's "
                             f"(expected {len(old_paths[0])} leaves, got {len(new_paths[0])})")
        new_leaves = []
        for (path, old), (_, new) in zip(old_paths[0], new_paths[0]):
            new = new if hasattr(new, "dtype") else np.asarray(new)
            if new.shape != old.shape or new.dtype != old.dtype:
                raise ValueError(f"sync_weights: leaf {jax.tree_util.keystr(path)} has shape/dtype "
                                 f"{new.shape}/{new.dtype}, "
                                 f"expected {old.shape}/{old.dtype}")
            if not isinstance(new, jax.Array) or new.sharding != old.sharding:
                new = jax.device_put(new, old.sharding)
            new_leaves.append(new)
        new_state = jax.tree_util.tree_unflatten(old_paths[1], new_leaves)
        jax.block_until_ready(new_leaves)
        self._state = new_state
        self._version = int(version)
        return time.perf_counter() - t0

    def close(self) -> None:
        self._state = None
        self._generate_jit.clear_cache()
        self._continuous.clear_cache()

    # ------------------------------------------------------------------ internals
    def _check_weights_alive(self) -> None:
        for path, leaf in jax.tree_util.tree_flatten_with_path(self._state)[0]:
            if isinstance(leaf, jax.Array) and leaf.is_deleted():
                raise RuntimeError(f"sampler weight {jax.tree_util.keystr(path)} was deleted (donated by a train "
                                   "step?); call sync_weights(model, version) before generate")

    def _run_static(self, prompts, row_ids, caps, params: SamplingParams, stop_arr, num_new_bucket):
        """Chunks of ``max_batch_size`` rows, each decoded until its longest row is done."""
        outs, slot_steps, calls = [], 0, 0
        for start in range(0, len(prompts), self.max_batch_size):
            if start:
                check_stop("JAX sampler, between chunks of rows")  # a pending stop (rollout.stop) ends it here
            sl = slice(start, start + self.max_batch_size)
            toks, logps, lengths, stopped = self._run_chunk(prompts[sl], row_ids[sl], caps[sl], params, stop_arr,
                                                            num_new_bucket)
            outs += [(toks[i, :lengths[i]].tolist(), logps[i, :lengths[i]].tolist(), bool(stopped[i]))
                     for i in range(len(lengths))]
            slot_steps += pick_bucket(len(lengths), self.batch_buckets, "batch rows") * int(lengths.max())
            calls += 1
        useful = sum(len(o[0]) for o in outs)
        return outs, {"useful_tokens": useful, "slot_steps": slot_steps,
                      "utilisation": useful / max(slot_steps, 1), "compiled_calls": calls}

    def _run_chunk(self, prompts, row_ids, caps, params: SamplingParams, stop_arr, num_new_bucket):
        rows = len(prompts)
        batch = pick_bucket(rows, self.batch_buckets, "batch rows")
        plen = pick_bucket(max(len(p) for p in prompts), self.prompt_buckets, "prompt length")
        tokens, mask = left_pad(prompts, plen, self.pad_id, batch)  # padding rows are finished from the start
        ids = np.zeros((batch,), np.int32)
        ids[:rows] = row_ids
        done = np.zeros((batch,), bool)
        done[rows:] = True
        max_new = np.ones((batch,), np.int32)
        max_new[:rows] = caps
        put = self.rows.put
        with self.rows.context():
            out = self._generate_jit(
                self._state, put(tokens), put(mask), put(ids), put(done),
                jnp.uint32(params.seed % (1 << 32)), jnp.float32(params.temperature), jnp.int32(params.top_k),
                jnp.float32(params.top_p), put(max_new), jnp.asarray(stop_arr),
                num_new_bucket=num_new_bucket)
        toks, logps, lengths, stopped = (to_host(x)[:rows] for x in out)
        return toks, logps, lengths, stopped

    def _generate_fn(self, state, tokens, prompt_mask, row_ids, done, seed, temperature, top_k, top_p,
                     max_new, stop_ids, *, num_new_bucket: int):
        """Traced once per (batch bucket, prompt bucket, new-token bucket, stop-id bucket); ``max_new [B]``
        is each row's token budget (<= ``num_new_bucket``)."""
        self.num_compilations += 1  # Python side effect: runs only while tracing.
        batch, plen = tokens.shape
        cache_len = plen + num_new_bucket
        model = nnx.merge(self._graphdef, state)
        cache = self.rows.constrain_cache(model.init_cache(batch, cache_len))
        prompt_lens = jnp.sum(prompt_mask, axis=-1).astype(jnp.int32)
        kv_mask = jnp.concatenate([prompt_mask.astype(jnp.int32),
                                   jnp.zeros((batch, num_new_bucket), jnp.int32)], axis=1)
        # One prefill pass over the whole prompt; only its last column (a real token in every row: left
        # padding) is unembedded, giving the logits of token 0, [B, V].
        logits, cache = model.prefill(tokens, prompt_mask, cache, last_only=True)
        cache = self.rows.constrain_cache(cache)
        out_tokens = jnp.full((batch, num_new_bucket), self.pad_id, jnp.int32)
        out_logps = jnp.zeros((batch, num_new_bucket), jnp.float32)
        lengths = jnp.zeros((batch,), jnp.int32)
        stopped = jnp.zeros((batch,), bool)

        def emit(t, step_logits, done, out_tokens, out_logps, lengths, stopped):
            keys = sampling_ops.row_keys(seed, row_ids, t)
            tok = sampling_ops.sample_tokens(keys, step_logits, temperature, top_k, top_p)
            logp = sampling_ops.chosen_token_logprobs(step_logits, tok)
            active = ~done
            tok = jnp.where(active, tok, self.pad_id)
            logp = jnp.where(active, logp, 0.0)
            out_tokens = jax.lax.dynamic_update_slice_in_dim(out_tokens, tok[:, None], t, axis=1)
            out_logps = jax.lax.dynamic_update_slice_in_dim(out_logps, logp[:, None], t, axis=1)
            lengths = lengths + active.astype(jnp.int32)
            hit_stop = active & jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)
            stopped = stopped | hit_stop
            done = done | hit_stop | (t + 1 >= max_new)
            return tok, done, out_tokens, out_logps, lengths, stopped

        tok, done, out_tokens, out_logps, lengths, stopped = emit(
            jnp.int32(0), logits, done, out_tokens, out_logps, lengths, stopped)

        def cond(carry):
            t, _, _, _, done, *_ = carry
            return (t < num_new_bucket) & ~jnp.all(done)

        def body(carry):
            t, prev_tok, cache, kv_mask, done, out_tokens, out_logps, lengths, stopped = carry
            slot = plen + t - 1
            kv_mask = jax.lax.dynamic_update_slice_in_dim(kv_mask, jnp.ones((batch, 1), jnp.int32), slot, axis=1)
            step_model = nnx.merge(self._graphdef, state)
            step_logits, cache = step_model.decode_step(prev_tok, prompt_lens + t - 1, slot, kv_mask, cache)
            cache = self.rows.constrain_cache(cache)
            tok, done, out_tokens, out_logps, lengths, stopped = emit(
                t, step_logits, done, out_tokens, out_logps, lengths, stopped)
            return t + 1, tok, cache, kv_mask, done, out_tokens, out_logps, lengths, stopped

        carry = (jnp.int32(1), tok, cache, kv_mask, done, out_tokens, out_logps, lengths, stopped)
        _, _, _, _, _, out_tokens, out_logps, lengths, stopped = jax.lax.while_loop(cond, body, carry)
        return out_tokens, out_logps, lengths, stopped
