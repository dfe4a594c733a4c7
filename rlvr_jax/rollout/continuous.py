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

Everything happens inside one compiled ``lax.while_loop`` per call; the host only feeds requests. One call
gets a *queue* of up to ``Qc`` pending requests (``Qc`` = ``queue_slots`` x ``B``, rounded to a multiple of
``R``) and runs, per iteration:

1. refills, while at least ``min(R, queued)`` slots are idle: the next ``R`` queued prompts
   (``refill_rows``; rows past the queue are padding whose scatter index is out of range, dropped) are
   prefilled into a fresh ``[R, P + N]`` cache, their token 0 is sampled, and the rows are scattered into
   the first idle slots (several refills per step when many short requests finish at once);
2. one decode step of every slot (idle slots compute too: static shapes);
3. harvest (``lax.cond``): slots that just finished copy their tokens, log-probs, length and request id
   into the call's completed buffer (``Qc + B`` rows, more than one call can finish) and become idle.

The call returns when everything is done, when its queue is used up while the host has more requests
(the host then sends the next queue; slots in flight carry over), or after ``decode_steps`` iterations.
The slot state (cache, masks, counters, per-slot output rows) lives across calls and is donated, so XLA
updates it in place; the host round trips are about ``requests / Qc``. One trace each of ``init`` and
``run`` per (slots, prompt bucket, new-token bucket, stop-id bucket). ``last_stats['utilisation']`` =
useful tokens / slot steps (decode steps x ``B`` + refills x ``R``) measures the idle-slot waste, most of
it the drain at the end, when no request is left to fill a finished slot. Sharding over the batch axes
and the Pallas decode-attention path work as in the static path (each slot's filled cache slots stay one
contiguous range, which the Pallas kernel's slot range needs); the queue is replicated.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlvr_jax.batch import left_pad
from rlvr_jax.rollout import sampling_ops
from rlvr_jax.sharding import to_host



_SLOT_KEYS = ("kv_mask", "tok", "t", "plen", "row", "req", "max_new", "active", "busy", "stopped", "out_tok",
              "out_logp")


def _scatter_rows(big, new, slots, axis: int):
    """``big`` with ``new``'s rows (along ``axis``) written at ``slots``; out-of-range slots are dropped."""
    index = (slice(None),) * axis + (slots,)
    return big.at[index].set(new.astype(big.dtype), mode="drop")


class ContinuousScheduler:
    """The slot scheduler behind ``JaxSampler(scheduler='continuous')`` (see module docstring)."""

    def __init__(self, sampler, *, decode_steps: int = 4096, refill_rows: int | None = None,
                 queue_slots: int = 2):
        if decode_steps < 1:
            raise ValueError(f"decode_steps must be >= 1, got {decode_steps}")
        if refill_rows is not None and refill_rows < 1:
            raise ValueError(f"refill_rows must be >= 1 (or None for an eighth of the slots), got {refill_rows}")
        if queue_slots < 1:
            raise ValueError(f"queue_slots must be >= 1, got {queue_slots}")
        self.s = sampler
        self.decode_steps = int(decode_steps)
        self.refill_rows = refill_rows
        self.queue_slots = int(queue_slots)
        model = nnx.merge(sampler._graphdef, sampler._state)
        self._axes = sampler.rows.batch_axis
        n_leaves = len(jax.tree.leaves(jax.eval_shape(lambda: model.init_cache(2, 8))))
        if len(jax.tree.leaves(self._axes)) != n_leaves:
            raise ValueError("the continuous scheduler needs every cache leaf to have a batch axis")
        self._init_jit = jax.jit(self._init_fn, static_argnames=("batch", "plen", "num_new"))
        self._run_jit = jax.jit(self._run_fn, donate_argnums=(1,))

    def clear_cache(self) -> None:
        self._init_jit.clear_cache()
        self._run_jit.clear_cache()

    def refill_size(self, slots: int) -> int:
        """Rows per refill: ``refill_rows`` (default ``slots // 8``), a multiple of the batch shards, <= slots."""
        r = self.refill_rows if self.refill_rows is not None else max(1, slots // 8)
        m = self.s._rows_multiple
        return min(slots, -(-r // m) * m)

    # ------------------------------------------------------------------ host loop
    def run(self, prompts, row_ids, caps, params, stop_arr, num_new_bucket):
        """Generates every request; returns ``([(tokens, logprobs, stopped)] per request, stats)``. Raises
        :class:`rlvr_jax.rollout.stop.GenerationStopped` between compiled calls once a stop is requested."""
        from rlvr_jax.rollout.jax_sampler import pick_bucket
        from rlvr_jax.rollout.stop import check_stop
        s = self.s
        Q = len(prompts)
        B = pick_bucket(min(Q, s.max_batch_size), s.batch_buckets, "batch rows")
        P = pick_bucket(max(len(p) for p in prompts), s.prompt_buckets, "prompt length")
        R = self.refill_size(B)
        Qc = -(-self.queue_slots * B // R) * R
        sp = (jnp.uint32(params.seed % (1 << 32)), jnp.float32(params.temperature), jnp.int32(params.top_k),
              jnp.float32(params.top_p), self.s.rows.replicated(np.asarray(stop_arr)))
        outs: list = [None] * Q
        sent = finished = slot_steps = calls = 0
        with s.rows.context():
            st = self._init_jit(s._state, batch=B, plen=P, num_new=num_new_bucket)
            while finished < Q:
                queue, q_len = self._queue(prompts, row_ids, caps, sent, Qc, P)
                st, done, counts = self._run_jit(
                    s._state, st, *queue, jnp.int32(q_len), jnp.bool_(sent + q_len < Q),
                    jnp.int32(self.decode_steps), *sp)
                count, head, steps, refills = (int(x) for x in to_host(counts))
                toks, logps, req, length, stopped = (to_host(x) for x in done)
                for i in range(count):
                    outs[req[i]] = (toks[i, :length[i]].tolist(), logps[i, :length[i]].tolist(), bool(stopped[i]))
                sent, finished = sent + head, finished + count
                slot_steps, calls = slot_steps + steps * B + refills * R, calls + 1
                if finished < Q:  # back on the host after at most decode_steps steps: a pending stop ends it
                    check_stop("JAX sampler, continuous batching")
        useful = sum(len(o[0]) for o in outs)
        return outs, {"useful_tokens": useful, "slot_steps": slot_steps, "utilisation": useful / max(slot_steps, 1),
                      "compiled_calls": calls, "slots": B, "refill_rows": R, "queue_rows": Qc}

    def _queue(self, prompts, row_ids, caps, first, Qc, P):
        """Host arrays of requests ``[first, first + Qc)`` (left-padded; rows past the end are padding)."""
        q_len = min(Qc, len(prompts) - first)
        tokens, mask = left_pad(prompts[first:first + q_len], P, self.s.pad_id, Qc)
        rows, req, budget = np.zeros((Qc,), np.int32), np.zeros((Qc,), np.int32), np.ones((Qc,), np.int32)
        for i in range(q_len):
            rows[i], req[i], budget[i] = row_ids[first + i], first + i, caps[first + i]
        return tuple(self.s.rows.replicated(x) for x in (tokens, mask, rows, req, budget)), q_len

    # ------------------------------------------------------------------ compiled parts
    def _rows(self, d):
        rows = self.s.rows
        return {k: (rows.constrain_cache(v) if k == "cache" else rows.constrain(v)) for k, v in d.items()}

    def _init_fn(self, wstate, *, batch: int, plen: int, num_new: int):
        self.s.num_compilations += 1  # Python side effect: runs only while tracing.
        model = nnx.merge(self.s._graphdef, wstate)
        z = lambda *shape: jnp.zeros(shape, jnp.int32)  # noqa: E731
        f = lambda *shape: jnp.zeros(shape, bool)  # noqa: E731
        return self._rows(dict(
            cache=model.init_cache(batch, plen + num_new), kv_mask=z(batch, plen + num_new),
            tok=z(batch) + self.s.pad_id, t=z(batch), plen=z(batch) + 1, row=z(batch), req=z(batch),
            max_new=z(batch) + 1, active=f(batch), busy=f(batch), stopped=f(batch),
            out_tok=z(batch, num_new) + self.s.pad_id, out_logp=jnp.zeros((batch, num_new), jnp.float32)))

    def _refill(self, model, st, queue, head, admit, sample, R: int):
        """Prefills queue rows ``[head, head + R)`` (the first ``admit`` of them real) into the first idle slots."""
        q_tokens, q_mask, q_row, q_req, q_cap = queue
        B, L = st["kv_mask"].shape
        P = q_tokens.shape[1]
        N = L - P
        take = lambda x: jax.lax.dynamic_slice_in_dim(x, head, R, axis=0)  # noqa: E731
        tokens, mask, rows, req, max_new = (take(x) for x in queue)
        idle_slots = jnp.nonzero(~st["busy"], size=R, fill_value=B)[0]
        slots = jnp.where(jnp.arange(R) < admit, idle_slots, B).astype(jnp.int32)
        cache = self.s.rows.constrain_cache(model.init_cache(R, L))
        plens = jnp.sum(mask, axis=-1).astype(jnp.int32)
        kv_mask = jnp.concatenate([mask, jnp.zeros((R, N), jnp.int32)], axis=1)
        # as in the static path: one prefill pass (one read of the weights), logits of the last column only
        logits, cache = model.prefill(tokens, mask, cache, last_only=True)
        cache = self.s.rows.constrain_cache(cache)
        tok, logp, hit = sample(logits, rows, jnp.zeros((R,), jnp.int32))
        new = dict(kv_mask=kv_mask, tok=tok, t=jnp.ones((R,), jnp.int32), plen=plens, row=rows, req=req,
                   max_new=max_new, active=~hit & (max_new > 1), busy=jnp.ones((R,), bool), stopped=hit,
                   out_tok=jnp.full((R, N), self.s.pad_id, jnp.int32).at[:, 0].set(tok),
                   out_logp=jnp.zeros((R, N), jnp.float32).at[:, 0].set(logp))
        out = {k: _scatter_rows(st[k], v, slots, 0) for k, v in new.items()}
        out["cache"] = jax.tree.map(lambda big, small, ax: _scatter_rows(big, small, slots, ax),
                                    st["cache"], cache, self._axes)
        return self._rows(out)

    def _decode(self, model, st, sample):
        """One decode step of every slot (idle ones rewrite their own row and are ignored)."""
        B, L = st["kv_mask"].shape
        N = st["out_tok"].shape[1]
        ar = jnp.arange(B)
        t, active = st["t"], st["active"]
        slot = L - N + t - 1  # where this step's input (token t-1) is written
        kv_mask = st["kv_mask"].at[ar, slot].set(1)
        logits, cache = model.decode_step(st["tok"], st["plen"] + t - 1, slot, kv_mask, st["cache"])
        tok, logp, hit = sample(logits, st["row"], t)
        hit = active & hit
        write = jnp.where(active, t, N)  # out of range for inactive slots: dropped
        t_new = t + active.astype(jnp.int32)
        return self._rows(dict(
            st, cache=cache, kv_mask=kv_mask, t=t_new, tok=jnp.where(active, tok, st["tok"]),
            stopped=st["stopped"] | hit, active=active & ~hit & (t_new < st["max_new"]),
            out_tok=st["out_tok"].at[ar, write].set(tok, mode="drop"),
            out_logp=st["out_logp"].at[ar, write].set(logp, mode="drop")))

    @staticmethod
    def _harvest(st, done, count):
        """Copies slots that finished (busy, not active) into ``done`` rows ``count, count+1, ...``."""
        fin = st["busy"] & ~st["active"]
        C = done[0].shape[0]
        at = jnp.where(fin, count + jnp.cumsum(fin) - 1, C)
        values = (st["out_tok"], st["out_logp"], st["req"], st["t"], st["stopped"])
        done = tuple(d.at[at].set(v, mode="drop") for d, v in zip(done, values))
        return dict(st, busy=st["busy"] & ~fin), done, count + jnp.sum(fin).astype(jnp.int32)

    def _run_fn(self, wstate, st, q_tokens, q_mask, q_row, q_req, q_cap, q_len, more_on_host, max_steps,
                seed, temperature, top_k, top_p, stop_ids):
        """Refill / decode / harvest until done, the queue is used up (more on the host) or ``max_steps``."""
        self.s.num_compilations += 1
        B, N = st["out_tok"].shape
        Qc = q_tokens.shape[0]
        R = self.refill_size(B)
        queue = (q_tokens, q_mask, q_row, q_req, q_cap)
        model = nnx.merge(self.s._graphdef, wstate)

        def sample(logits, rows, steps):
            keys = sampling_ops.row_keys(seed, rows, steps)
            tok = sampling_ops.sample_tokens(keys, logits, temperature, top_k, top_p)
            return (tok, sampling_ops.chosen_token_logprobs(logits, tok),
                    jnp.any(tok[:, None] == stop_ids[None, :], axis=-1))

        done = (jnp.full((Qc + B, N), self.s.pad_id, jnp.int32), jnp.zeros((Qc + B, N), jnp.float32),
                jnp.zeros((Qc + B,), jnp.int32), jnp.zeros((Qc + B,), jnp.int32), jnp.zeros((Qc + B,), bool))

        def cond(c):
            k, head, _, _, st, _ = c
            left = q_len - head
            idle = ~st["busy"]
            finished = jnp.all(idle) & (left == 0)
            need_host = (left == 0) & more_on_host & jnp.any(idle)
            return (k < max_steps) & ~finished & ~need_host

        def refill_cond(c):
            head, _, st = c
            left = q_len - head
            return (left > 0) & (jnp.sum(~st["busy"]) >= jnp.minimum(R, left))

        def refill_body(c):
            head, refills, st = c
            admit = jnp.minimum(jnp.minimum(R, q_len - head), jnp.sum(~st["busy"]))
            return head + admit, refills + 1, self._refill(model, st, queue, head, admit, sample, R)

        def body(c):
            k, head, refills, count, st, done = c
            head, refills, st = jax.lax.while_loop(refill_cond, refill_body, (head, refills, st))
            st = self._decode(model, st, sample)
            st, done, count = jax.lax.cond(jnp.any(st["busy"] & ~st["active"]), self._harvest,
                                           lambda a, b, n: (a, b, n), st, done, count)
            return k + 1, head, refills, count, st, done

        z = jnp.int32(0)
        steps, head, refills, count, st, done = jax.lax.while_loop(cond, body, (z, z, z, z, st, done))
        return st, done, jnp.stack([count, head, steps, refills])
