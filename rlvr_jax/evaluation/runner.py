"""The evaluator: sample n responses per problem, grade them, write records, tables and plots; resumable.

Output directory layout::

    out_dir/eval_config.json           the EvalConfig (resuming requires the sample-defining fields to match)
    out_dir/<dataset>/samples.jsonl    per-sample records (see records.py); <dataset> with ':' -> '_'
    out_dir/<dataset>/greedy.jsonl     one greedy record per problem (when cfg.greedy)
    out_dir/summary.json               {dataset: metrics} (see summary.py)
    out_dir/pass_at_k.csv / .md        pass@k per dataset (rows k), plus the other metrics in the .md
    out_dir/pass_at_k.png              pass@k curves, log2 k axis

Re-running with the same ``out_dir`` skips every problem whose records are complete and regenerates the
others; it refuses to continue when the saved settings (``EvalConfig.resume_fingerprint``: sampling, seed,
seeding scheme, policy, engine) differ.

Seeds: sample ``s`` of problem ``p`` is drawn with the per-problem seed :func:`problem_seed` (``seed``, ``p.id``),
so results depend neither on ``prompt_batch_size`` nor on which problems share a batch (nor on resuming). An
engine that honours ``SamplingParams.prompt_seeds`` gets whole batches; another gets one call per problem.
Problem ids must be unique within a dataset (records are keyed by id): a repeated id is an error.

``token_entropy_fn(prompts, completions) -> list of per-token entropy arrays`` supplies the raw-distribution
entropies for the token-level entropy metric (e.g. :func:`make_model_token_entropy_fn`); without it that metric
is reported as missing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
import time
from typing import Callable, Mapping, Sequence

import numpy as np

from rlvr_jax.data.datasets import Dataset
from rlvr_jax.data.templates import encode_prompt, stop_token_ids
from rlvr_jax.evaluation import records as rec
from rlvr_jax.evaluation.config import EvalConfig
from rlvr_jax.evaluation.plots import plot_pass_at_k
from rlvr_jax.evaluation.summary import extra_rows, markdown_table, pass_at_k_rows, summarize, write_csv
from rlvr_jax.rollout.base import RolloutEngine

logger = logging.getLogger(__name__)

TokenEntropyFn = Callable[[Sequence[Sequence[int]], Sequence[Sequence[int]]], Sequence[np.ndarray]]


def problem_seed(seed: int, problem_id: str) -> int:
    """The 32-bit seed of one problem: blake2b of (seed, problem id)."""
    digest = hashlib.blake2b(f"{int(seed)}:{problem_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _generate_seeded(engine, prompts, batch, n: int, params, seed: int):
    """``engine.generate`` with per-problem seeds (batched when the engine supports them)."""
    seeds = [problem_seed(seed, p.id) for p in batch]
    if getattr(engine, "supports_prompt_seeds", False):
        return engine.generate(prompts, n, dataclasses.replace(params, prompt_seeds=tuple(seeds)))
    return [engine.generate([pr], n, dataclasses.replace(params, seed=sd))[0] for pr, sd in zip(prompts, seeds)]


def _check_unique_ids(name: str, ds) -> None:
    seen, dup = set(), []
    for p in ds:
        if p.id in seen:
            dup.append(p.id)
        seen.add(p.id)
    if dup:
        raise ValueError(f"{name}: {len(dup)} problem id(s) appear more than once ({sorted(set(dup))[:5]}); "
                         f"evaluation records are keyed by id, so every id must be unique")


def dataset_dirname(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _check_resume(out_dir: pathlib.Path, cfg: EvalConfig) -> None:
    path = out_dir / "eval_config.json"
    if path.exists():
        saved = json.loads(path.read_text())
        mismatched = {k: (saved.get(k), v) for k, v in cfg.resume_fingerprint().items() if saved.get(k) != v}
        if mismatched:
            raise ValueError(f"{out_dir} holds samples made with different settings {mismatched} (saved, now); "
                             f"use another out directory (--config.out) or the same settings to resume")
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg.to_dict(), indent=2))


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", disable=not enabled, dynamic_ncols=True)


def _run_kind(engine, tokenizer, todo: list, cfg: EvalConfig, kind: str, path: pathlib.Path,
              pool, token_entropy_fn, stops, bar) -> None:
    n = 1 if kind == "greedy" else cfg.n
    params = cfg.sampling_params(stops, greedy=(kind == "greedy"))
    for start in range(0, len(todo), cfg.prompt_batch_size):
        batch = todo[start:start + cfg.prompt_batch_size]
        prompts = [encode_prompt(p.problem, cfg.template, tokenizer) for p in batch]
        outs = _generate_seeded(engine, prompts, batch, n, params, cfg.seed)
        if len(outs) != len(batch) or any(len(o) != n for o in outs):
            raise RuntimeError(f"engine returned {[len(o) for o in outs]} completions for {len(batch)} prompts "
                               f"x n={n}")
        flat = [(p, c) for p, o in zip(batch, outs) for c in o]
        texts = [tokenizer.decode(c.token_ids, skip_special_tokens=True) for _, c in flat]
        grades = pool.grade_problems([p for p, _ in flat], texts, timeout_s=cfg.grade_timeout_s)
        if token_entropy_fn is not None:
            prompt_of = {id(p): pr for p, pr in zip(batch, prompts)}
            ents = token_entropy_fn([prompt_of[id(p)] for p, _ in flat], [c.token_ids for _, c in flat])
            ent_sums = [float(np.sum(e)) for e in ents]
        else:
            ent_sums = [None] * len(flat)
        records = [rec.SampleRecord(problem_id=p.id, sample_index=c.sample_index, kind=kind, extracted=g.extracted,
                                    status=g.status, correct=g.correct, length=len(c.token_ids),
                                    finish_reason=c.finish_reason, entropy_sum=e,
                                    text=t if cfg.save_text else None, error=g.error)
                   for (p, c), g, t, e in zip(flat, grades, texts, ent_sums)]
        rec.append(path, records)
        bar.update(len(records))


def evaluate(engine: RolloutEngine, tokenizer, datasets: Mapping[str, Dataset] | Sequence[Dataset],
             cfg: EvalConfig, out_dir, token_entropy_fn: TokenEntropyFn | None = None, *, pool=None,
             progress: bool = True, label: str | None = None) -> dict:
    """Evaluates ``engine`` on ``datasets`` and writes everything under ``out_dir``; returns the summary dict.

    ``pool`` is a :class:`rlvr_jax.rewards.GraderPool` (one is created and closed here when None).
    """
    from rlvr_jax.rewards.pool import GraderPool

    out = pathlib.Path(out_dir)
    _check_resume(out, cfg)
    if not isinstance(datasets, Mapping):
        datasets = {d.name: d for d in datasets}
    stops = stop_token_ids(tokenizer)
    own_pool = pool is None
    if own_pool:
        pool = GraderPool(cfg.grade_workers, timeout_s=cfg.grade_timeout_s)
    summaries: dict[str, dict] = {}
    try:
        for name, ds in datasets.items():
            ds = ds.take(cfg.max_problems)
            _check_unique_ids(name, ds)
            ddir = out / dataset_dirname(name)
            ddir.mkdir(parents=True, exist_ok=True)
            kinds = [("sample", cfg.n, ddir / "samples.jsonl")] + (
                [("greedy", 1, ddir / "greedy.jsonl")] if cfg.greedy else [])
            done: dict[str, dict] = {}
            work = []
            for kind, n_req, path in kinds:
                complete = rec.load_complete(path, n_req)
                complete = {pid: r for pid, r in complete.items() if pid in {p.id for p in ds}}
                rec.rewrite(path, complete)  # drop partial problems and torn lines before appending
                done[kind] = complete
                todo = [p for p in ds if p.id not in complete]
                work.append((kind, n_req, path, todo))
            total = sum(len(todo) * n_req for _, n_req, _, todo in work)
            resumed = sum(len(v) for v in done.values())
            if resumed:
                logger.info("%s: resuming, %d problem-runs already complete", name, resumed)
            t0 = time.monotonic()
            with _progress(total, f"{label + ' ' if label else ''}{name}", progress) as bar:
                for kind, _, path, todo in work:
                    _run_kind(engine, tokenizer, todo, cfg, kind, path, pool, token_entropy_fn, stops, bar)
            samples = rec.load_complete(ddir / "samples.jsonl", cfg.n)
            greedy = rec.load_complete(ddir / "greedy.jsonl", 1) if cfg.greedy else None
            missing = [p.id for p in ds if p.id not in samples]
            if missing:
                raise RuntimeError(f"{name}: records incomplete for {len(missing)} problem(s), e.g. {missing[:3]}")
            summaries[name] = summarize(samples, greedy, cfg.resolved_ks)
            summaries[name]["seconds"] = time.monotonic() - t0
    finally:
        if own_pool:
            pool.close()
    write_outputs(out, summaries, label=label or out.name)
    return summaries


def write_outputs(out: pathlib.Path, summaries: dict, label: str) -> None:
    """summary.json, pass_at_k.csv/.md and pass_at_k.png for one evaluation directory."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summaries, indent=2))
    header, rows = pass_at_k_rows({name: s["pass_at_k"] for name, s in summaries.items()})
    write_csv(out / "pass_at_k.csv", header, rows)
    eh, er = extra_rows(summaries)
    (out / "pass_at_k.md").write_text(f"## pass@k ({label})\n\n" + markdown_table(header, rows) +
                                      "\n## other metrics\n\n" + markdown_table(eh, er))
    plot_pass_at_k({label: {name: s["pass_at_k"] for name, s in summaries.items()}}, out / "pass_at_k.png",
                   title=label)


def compare(dirs: Sequence, out_dir, labels: Sequence[str] | None = None) -> dict:
    """Overlays earlier evaluation outputs: per-dataset tables (rows k, one column per directory) in
    ``compare.md`` / ``compare_<dataset>.csv`` and a combined ``compare_pass_at_k.png``."""
    dirs = [pathlib.Path(d) for d in dirs]
    labels = list(labels) if labels else [d.name for d in dirs]
    if len(labels) != len(dirs):
        raise ValueError(f"compare: {len(labels)} labels for {len(dirs)} directories")
    curves: dict[str, dict] = {}
    loaded: dict[str, dict] = {}
    for d, lab in zip(dirs, labels):
        f = d / "summary.json"
        if not f.exists():
            raise FileNotFoundError(f"compare: {f} not found (run the evaluator into {d} first)")
        loaded[lab] = json.loads(f.read_text())
        curves[lab] = {name: s["pass_at_k"] for name, s in loaded[lab].items()}
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    datasets = sorted({name for s in loaded.values() for name in s})
    md = []
    for name in datasets:
        cols = {lab: curves[lab][name] for lab in labels if name in curves[lab]}
        header, rows = pass_at_k_rows(cols)
        write_csv(out / f"compare_{dataset_dirname(name)}.csv", header, rows)
        eh, er = extra_rows({lab: loaded[lab][name] for lab in labels if name in loaded[lab]})
        md.append(f"## {name}\n\n" + markdown_table(header, rows) + "\n" + markdown_table(eh, er))
    (out / "compare.md").write_text("\n".join(md))
    plot_pass_at_k(curves, out / "compare_pass_at_k.png")
    return loaded


def make_model_token_entropy_fn(model, *, pad_id: int = 0, batch_size: int = 8, length_bucket: int = 64,
                                chunk_size: int = 256) -> TokenEntropyFn:
    """Teacher-forced raw-distribution entropies of the completion tokens under an nnx ``Decoder``.

    For a sequence ``prompt + completion`` (right-padded to a multiple of ``length_bucket``), the entropy of
    the distribution that generated completion token j is read at position ``len(prompt) + j - 1``.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from rlvr_jax.models.logprobs import token_logprobs

    graphdef, state = nnx.split(model)

    @jax.jit
    def _entropy(state, ids, mask):
        m = nnx.merge(graphdef, state)
        h = m.hidden(ids, attention_mask=mask)
        _, ent = token_logprobs(h[:, :-1], m.unembed_matrix(), ids[:, 1:], chunk_size=chunk_size)
        return ent

    def fn(prompts, completions):
        out: list[np.ndarray] = []
        for s in range(0, len(prompts), batch_size):
            ps, cs = prompts[s:s + batch_size], completions[s:s + batch_size]
            lens = [len(p) + len(c) for p, c in zip(ps, cs)]
            T = max(2, -(-max(lens) // length_bucket) * length_bucket)
            ids = np.full((batch_size, T), pad_id, np.int32)
            mask = np.zeros((batch_size, T), np.int32)
            for i, (p, c) in enumerate(zip(ps, cs)):
                seq = list(p) + list(c)
                ids[i, :len(seq)] = seq
                mask[i, :len(seq)] = 1
            ent = np.asarray(_entropy(state, jnp.asarray(ids), jnp.asarray(mask)))
            for i, (p, c) in enumerate(zip(ps, cs)):
                out.append(ent[i, len(p) - 1:len(p) - 1 + len(c)].astype(np.float64))
        return out

    return fn
