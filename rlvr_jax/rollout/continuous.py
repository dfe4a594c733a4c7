"""Continuous batching for :class:`~rlvr_jax.rollout.jax_sampler.JaxSampler` (``scheduler='continuous'``).

A fixed number of *slots* ``B`` (the batch bucket of the request count, capped at ``max_batch_size``) decodes
together; when a slot's request finishes (stop token or its token budget), the next pending request
(prompt, sample index) is prefilled into that slot while the other slots keep their caches and counters.
Each slot keeps the static path's per-row layout of its cache (``P`` = prompt bucket, ``N`` = new-token
bucket)::

    slots  [0 ........ P)                  [P ......... P+N)
           its left-padded prompt          its generated tokens; its step t writes slot P+t-1

so a slot carries its own step counter ``t``, prompt length (positions ``plen + t - 1``), row id (the PRNG
key ``fold_in(fold_in(key(seed), row), t)``, as in the static path) and token budget, and the decoder's
``decode_step`` takes the per-row write slots ``P + t - 1`` (an int32 ``[B]`` ``cache_index``). Refilling a
slot overwrites its whole cache row and ``kv_mask`` row, so nothing of the old request is attended. Every
slot's output is thus the static path's output for that request: same tokens, same raw log-probs (up to
float rounding of batched kernels).

Device state (cache, masks, counters, per-slot output buffers ``[B, N]``) lives across compiled calls and
is donated to each call, so XLA updates it in place. Two compiled functions, one trace per
(slots, prompt bucket, new-token bucket, stop-id bucket):

* ``refill``: prefills ``R`` pending prompts (``refill_rows``; unused rows are padding whose scatter index
  is out of range and dropped) into a fresh ``[R, P + N]`` cache, emits their token 0, and scatters the
  rows into the chosen slots.
* ``decode``: a ``lax.while_loop`` of at most ``decode_steps`` steps over all slots, leaving early when
  every slot is idle or when ``min_free`` slots are idle (``min_free = min(R, pending requests)``, so a
  refill is never smaller than it needs to be; with nothing pending it runs until all are done).

The host loop between them is the only round trip: it fetches the small per-slot counters, copies out the
finished slots' tokens (one ``[B, N]`` fetch per call that finished something) and refills. Idle slots
still take part in each step (static shapes); ``last_stats['utilisation']`` = useful tokens / slot steps
measures that waste. Sharding over the batch axes and the Pallas decode-attention path work as in the
static path (each row's filled slots stay contiguous, which the Pallas kernel's slot range needs).
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from rlvr_jax.rollout import sampling_ops


def _scatter_rows(big, new, slots, axis: int):
    """``big`` with ``new``'s rows (along ``axis``) written at ``slots``; out-of-range slots are dropped."""
    index = (slice(None),) * axis + (slots,)
    return big.at[index].set(new.astype(big.dtype), mode="drop")


class ContinuousScheduler:
    """The slot scheduler behind ``JaxSampler(scheduler='continuous')`` (see module docstring)."""

    def __init__(self, sampler, *, decode_steps: int = 64, refill_rows: int | None = None):
        if decode_steps < 1:
            raise ValueError(f"decode_steps must be >= 1, got {decode_steps}")
        if refill_rows is not None and refill_rows < 1:
            raise ValueError(f"refill_rows must be >= 1 (or None for an eighth of the slots), got {refill_rows}")
        self.s = sampler
        self.decode_steps = int(decode_steps)
        self.refill_rows = refill_rows
        model = nnx.merge(sampler._graphdef, sampler._state)
        self._axes = sampler._find_cache_batch_axes(model)
        n_leaves = len(jax.tree.leaves(jax.eval_shape(lambda: model.init_cache(2, 8))))
        if len(jax.tree.leaves(self._axes)) != n_leaves:
            raise ValueError("the continuous scheduler needs every cache leaf to have a batch axis")
        self._init_jit = jax.jit(self._init_fn, static_argnames=("batch", "plen", "num_new"))
        self._refill_jit = jax.jit(self._refill_fn, donate_argnums=(1,))
        self._decode_jit = jax.jit(self._decode_fn, donate_argnums=(1,))

    def clear_cache(self) -> None:
        for f in (self._init_jit, self._refill_jit, self._decode_jit):
            f.clear_cache()

    def refill_size(self, slots: int) -> int:
        """Rows per refill call: ``refill_rows`` (default ``slots // 8``), a multiple of the batch shards."""
        r = self.refill_rows if self.refill_rows is not None else max(1, slots // 8)
        m = self.s._rows_multiple
        return min(slots, -(-r // m) * m)

    # ------------------------------------------------------------------ host loop
    def run(self, prompts, row_ids, caps, params, stop_arr, num_new_bucket):
        """Generates every request; returns ``([(tokens, logprobs, stopped)] per request, stats)``."""
        s = self.s
        Q = len(prompts)
        from rlvr_jax.rollout.jax_sampler import pick_bucket
        B = pick_bucket(min(Q, s.max_batch_size), s.batch_buckets, "batch rows")
        P = pick_bucket(max(len(p) for p in prompts), s.prompt_buckets, "prompt length")
        R = self.refill_size(B)
        sp = (jnp.uint32(params.seed % (1 << 32)), jnp.float32(params.temperature), jnp.int32(params.top_k),
              jnp.float32(params.top_p), jnp.asarray(stop_arr))
        outs: list = [None] * Q
        slot_req = np.full((B,), -1, np.int64)
        nxt, slot_steps, calls = 0, 0, 1
        with jax.set_mesh(s.mesh) if s.mesh is not None else contextlib.nullcontext():
            st = self._init_jit(s._state, batch=B, plen=P, num_new=num_new_bucket)
            while True:
                free = np.flatnonzero(slot_req < 0)
                while len(free) and nxt < Q:
                    take = min(R, len(free), Q - nxt)
                    st = self._refill(st, prompts, row_ids, caps, nxt, free[:take], R, P, B, sp)
                    slot_req[free[:take]] = np.arange(nxt, nxt + take)
                    nxt, free = nxt + take, free[take:]
                    slot_steps, calls = slot_steps + R, calls + 1
                if (slot_req < 0).all():
                    break
                min_free = min(R, Q - nxt) if nxt < Q else B + 1
                st, steps = self._decode_jit(s._state, st, jnp.int32(self.decode_steps), jnp.int32(min_free), *sp)
                active, t, stopped = (s._fetch(st[k]) for k in ("active", "t", "stopped"))
                slot_steps, calls = slot_steps + int(steps) * B, calls + 1
                finished = np.flatnonzero((slot_req >= 0) & ~active)
                if len(finished):
                    toks, logps = s._fetch(st["out_tok"]), s._fetch(st["out_logp"])
                    for b in finished:
                        outs[slot_req[b]] = (toks[b, :t[b]].tolist(), logps[b, :t[b]].tolist(), bool(stopped[b]))
                    slot_req[finished] = -1
        useful = sum(len(o[0]) for o in outs)
        return outs, {"useful_tokens": useful, "slot_steps": slot_steps, "utilisation": useful / max(slot_steps, 1),
                      "compiled_calls": calls, "slots": B, "refill_rows": R}

    def _refill(self, st, prompts, row_ids, caps, first, slots, R, P, B, sp):
        tokens = np.full((R, P), self.s.pad_id, np.int32)
        mask = np.zeros((R, P), np.int32)
        mask[:, -1] = 1  # padding rows: one dummy real token (finite attention); their scatter is dropped
        where = np.full((R,), B, np.int32)
        rows = np.zeros((R,), np.int32)
        budget = np.ones((R,), np.int32)
        for i, b in enumerate(slots):
            p = prompts[first + i]
            tokens[i, P - len(p):] = p
            mask[i, :P - len(p)] = 0
            mask[i, P - len(p):] = 1
            where[i], rows[i], budget[i] = b, row_ids[first + i], caps[first + i]
        put = self.s._put_rows
        return self._refill_jit(self.s._state, st, put(tokens), put(mask), put(where), put(rows), put(budget), *sp)

    # ------------------------------------------------------------------ compiled parts
    def _constrain_rows(self, x):
        s = self.s
        if s.mesh is None or not s.batch_axes:
            return x
        spec = PartitionSpec(s.batch_axes, *([None] * (x.ndim - 1)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(s.mesh, spec))

    def _rows(self, d):
        return {k: (v if k == "cache" else self._constrain_rows(v)) for k, v in d.items()}

    def _init_fn(self, wstate, *, batch: int, plen: int, num_new: int):
        self.s.num_compilations += 1  # Python side effect: runs only while tracing.
        model = nnx.merge(self.s._graphdef, wstate)
        pad = self.s.pad_id
        z = lambda *shape: jnp.zeros(shape, jnp.int32)  # noqa: E731
        return self._rows(dict(
            cache=self.s._constrain_cache(model.init_cache(batch, plen + num_new)),
            kv_mask=z(batch, plen + num_new), tok=jnp.full((batch,), pad, jnp.int32), t=z(batch),
            plen=z(batch) + 1, row=z(batch), max_new=z(batch) + 1, active=jnp.zeros((batch,), bool),
            stopped=jnp.zeros((batch,), bool), out_tok=jnp.full((batch, num_new), pad, jnp.int32),
            out_logp=jnp.zeros((batch, num_new), jnp.float32)))

    def _refill_fn(self, wstate, st, tokens, mask, slots, rows, max_new, seed, temperature, top_k, top_p, stop_ids):
        """Prefills ``R`` prompts into a fresh cache, emits token 0, scatters them into ``slots``."""
        self.s.num_compilations += 1
        R, P = tokens.shape
        L = st["kv_mask"].shape[1]
        N = L - P
        model = nnx.merge(self.s._graphdef, wstate)
        cache = self.s._constrain_cache(model.init_cache(R, L))
        plens = jnp.sum(mask, axis=-1).astype(jnp.int32)
        kv_mask = jnp.concatenate([mask.astype(jnp.int32), jnp.zeros((R, N), jnp.int32)], axis=1)
        if P > 1:  # as in the static path: prefill P-1 columns, then one decode step on the last column
            _, cache = model.prefill(tokens[:, :-1], mask[:, :-1], cache)
            cache = self.s._constrain_cache(cache)
        logits, cache = model.decode_step(tokens[:, -1], plens - 1, jnp.int32(P - 1), kv_mask, cache)
        keys = sampling_ops.row_keys(seed, rows, 0)
        tok = sampling_ops.sample_tokens(keys, logits, temperature, top_k, top_p)
        logp = sampling_ops.chosen_token_logprobs(logits, tok)
        hit = jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)
        new = dict(kv_mask=kv_mask, tok=tok, t=jnp.ones((R,), jnp.int32), plen=plens, row=rows, max_new=max_new,
                   active=~hit & (max_new > 1), stopped=hit,
                   out_tok=jnp.full((R, N), self.s.pad_id, jnp.int32).at[:, 0].set(tok),
                   out_logp=jnp.zeros((R, N), jnp.float32).at[:, 0].set(logp))
        out = {k: _scatter_rows(st[k], v, slots, 0) for k, v in new.items()}
        out["cache"] = self.s._constrain_cache(jax.tree.map(
            lambda big, small, ax: _scatter_rows(big, small, slots, ax), st["cache"], cache, self._axes))
        return self._rows(out)

    def _decode_fn(self, wstate, st, max_steps, min_free, seed, temperature, top_k, top_p, stop_ids):
        """Up to ``max_steps`` decode steps of every slot; returns ``(state, steps run)``."""
        self.s.num_compilations += 1
        B, L = st["kv_mask"].shape
        N = st["out_tok"].shape[1]
        P = L - N
        ar = jnp.arange(B)

        def cond(carry):
            k, st = carry
            idle = jnp.sum(~st["active"])
            return (k < max_steps) & (idle < B) & (idle < min_free)

        def body(carry):
            k, st = carry
            t, active = st["t"], st["active"]
            slot = P + t - 1  # where this step's input (token t-1) is written; idle slots rewrite their own row
            kv_mask = st["kv_mask"].at[ar, slot].set(1)
            model = nnx.merge(self.s._graphdef, wstate)
            logits, cache = model.decode_step(st["tok"], st["plen"] + t - 1, slot, kv_mask, st["cache"])
            keys = sampling_ops.row_keys(seed, st["row"], t)
            tok = sampling_ops.sample_tokens(keys, logits, temperature, top_k, top_p)
            logp = sampling_ops.chosen_token_logprobs(logits, tok)
            hit = active & jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)
            write = jnp.where(active, t, N)  # out of range for idle slots: dropped
            t_new = t + active.astype(jnp.int32)
            new = dict(st, cache=self.s._constrain_cache(cache), kv_mask=kv_mask, t=t_new,
                       tok=jnp.where(active, tok, st["tok"]), stopped=st["stopped"] | hit,
                       active=active & ~hit & (t_new < st["max_new"]),
                       out_tok=st["out_tok"].at[ar, write].set(tok, mode="drop"),
                       out_logp=st["out_logp"].at[ar, write].set(logp, mode="drop"))
            return k + 1, self._rows(new)

        steps, st = jax.lax.while_loop(cond, body, (jnp.int32(0), st))
        return st, steps
