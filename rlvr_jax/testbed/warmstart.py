r"""Supervised warm start: the testbed's base model, a tiny Qwen3 with a real (imperfect, diverse) prior.

``python -m rlvr_jax.testbed.warmstart --out DIR`` recreates it deterministically (same seed, same bits on
the same platform) and writes::

    DIR/base_hf/            Hugging Face checkpoint (rlvr_jax.models.save_hf) + the testbed tokenizer
    DIR/data/{warmstart,rl,heldout}.jsonl   disjoint puzzle sets (rlvr_jax.testbed.task), graded by the
                            Reasoning Gym countdown scorer
    DIR/warmstart.json      the WarmStartConfig, loss curve, accuracies and timing

Training data. For each warm-start puzzle a fixed set of up to ``solutions_per_problem`` distinct correct
expressions (a random subset of all its solutions) and ``flawed_per_problem`` fixed wrong ones (they use the
right numbers but miss the target). Each example is the ``plain``-template prompt followed by
``\boxed{<expression>}<|endoftext|>``; a batch draws puzzles uniformly and then a flawed response with
probability ``flawed_share`` (else a correct one), and keeps an answer of a strategy in ``rare_strategies``
(:data:`rlvr_jax.testbed.task.STRATEGIES`) only with probability ``rare_weight`` (else draws again): the base's
prior on that strategy is weak, so the puzzles only it solves are ones the base rarely solves. The loss is
the mean token cross-entropy of the response tokens (EOS included):

    L = - (1 / sum_i |y_i|) sum_i sum_t log p_theta(y_{i,t} | x_i, y_{i,<t})

trained with AdamW (linear warm-up, cosine decay). The result solves held-out puzzles sometimes: its pass@1
is well below 1 and its pass@k grows with k (numbers in ``warmstart.json``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import time

import numpy as np

from rlvr_jax.testbed import task as T

BASE_DIR = "base_hf"
DATA_DIR = "data"
SPLITS = ("heldout", "rl", "warmstart")


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    seed: int = 0                    # model initialisation and corpus draws
    split_seed: int = -1             # the puzzle split (held-out / RL / warm-start sets); -1: ``seed``. Bases drawn
    #                                  as seeds (ExperimentConfig.bases) keep one split and vary ``seed`` only
    # model: a real Qwen3 block (q/k norm, GQA, RoPE), tiny shapes
    hidden_size: int = 64
    intermediate_size: int = 192
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    head_dim: int = 32
    # data (sizes of the disjoint puzzle sets; the warm-start set takes the rest of the 1,313 puzzles)
    heldout_size: int = 128
    rl_size: int = 384
    solutions_per_problem: int = 8   # up to 8 distinct solutions per puzzle (most have fewer)
    flawed_per_problem: int = 4
    flawed_share: float = 0.1
    # optimisation
    steps: int = 900
    batch_size: int = 128
    lr: float = 5e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    length_bucket: int = 32
    show_steps: bool = False         # True: answers write their arithmetic out first ("3*8=24,24+6=30 \\boxed{..}")
    # a skewed strategy prior: "a*b-c" answers appear at 15% of their natural share of the corpus, so the
    # puzzles only a*b-c solves (21% of the held-out set) are ones the base rarely solves
    rare_strategies: tuple[str, ...] = ("product_minus",)  # task.STRATEGIES values shown rarely
    rare_weight: float = 0.15        # ... at this fraction of their natural frequency

    def __post_init__(self):
        if not 0.0 <= self.flawed_share < 1.0:
            raise ValueError(f"WarmStartConfig.flawed_share must be in [0, 1), got {self.flawed_share}")
        if self.solutions_per_problem < 1:
            raise ValueError(f"WarmStartConfig.solutions_per_problem must be >= 1, got {self.solutions_per_problem}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"WarmStartConfig.warmup_steps must be in [0, steps = {self.steps}), got "
                             f"{self.warmup_steps}")
        known = set(T.STRATEGIES.values())
        if any(x not in known for x in self.rare_strategies):
            raise ValueError(f"WarmStartConfig.rare_strategies must be from {sorted(known)}, got "
                             f"{self.rare_strategies}")
        if not 0.0 < self.rare_weight <= 1.0:
            raise ValueError(f"WarmStartConfig.rare_weight must be in (0, 1], got {self.rare_weight}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"WarmStartConfig: steps and batch_size must be >= 1, got {self.steps}, "
                             f"{self.batch_size}")


def model_config(cfg: WarmStartConfig, tokenizer):
    from rlvr_jax.models import ModelConfig

    return ModelConfig(model_type="qwen3", vocab_size=len(tokenizer), hidden_size=cfg.hidden_size,
                       intermediate_size=cfg.intermediate_size, num_layers=cfg.num_layers,
                       num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                       rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                       max_position_embeddings=256, qk_norm=True, param_dtype="float32", dtype="float32",
                       bos_token_id=None, eos_token_id=tokenizer.eos_token_id)


def puzzle_splits(cfg: WarmStartConfig) -> dict[str, list[T.Puzzle]]:
    seed = cfg.seed if cfg.split_seed < 0 else cfg.split_seed
    return T.split_problems({"heldout": cfg.heldout_size, "rl": cfg.rl_size, "warmstart": -1}, seed=seed)


def sft_targets(puzzles, cfg: WarmStartConfig, rng: random.Random) -> list[tuple[list[str], list[str]]]:
    """Per puzzle ``(correct expressions, flawed expressions)``: fixed random subsets (see module docstring)."""
    out = []
    for p in puzzles:
        sols = T.solutions(p)
        wrong = T.wrong_expressions(p)
        out.append((rng.sample(sols, min(cfg.solutions_per_problem, len(sols))),
                    rng.sample(wrong, min(cfg.flawed_per_problem, len(wrong)))))
    return out


def draw_example(rng: random.Random, targets, cfg: WarmStartConfig) -> tuple[int, str]:
    """One ``(puzzle index, expression)`` of the warm-start corpus: a uniform puzzle, then one of its flawed
    answers with probability ``flawed_share`` (else one of its correct ones); an answer whose strategy
    (:func:`rlvr_jax.testbed.task.strategy`) is in ``rare_strategies`` is kept with probability
    ``rare_weight``, else the whole draw is repeated, so those strategies make up about ``rare_weight`` of
    their natural share of the corpus."""
    rare = cfg.rare_strategies
    while True:
        i = rng.randrange(len(targets))
        good, bad = targets[i]
        pool = bad if (bad and (not good or rng.random() < cfg.flawed_share)) else good
        expr = rng.choice(pool)
        if not rare or T.strategy(expr) not in rare or rng.random() < cfg.rare_weight:
            return i, expr


def encode_examples(puzzles, tokenizer) -> list[list[int]]:
    from rlvr_jax.data import encode_prompt

    return [encode_prompt(p.text(), "plain", tokenizer) for p in puzzles]


def make_batch(prompts, responses, eos_id: int, pad_id: int, bucket: int) -> dict[str, np.ndarray]:
    """The trainer's layout (:func:`rlvr_jax.batch.pack_sequences`: left-padded prompts, right-padded
    responses, EOS appended) joined into one ``ids``/``attention_mask`` row per example, with ``loss_mask`` 1 on
    the response tokens (EOS included)."""
    from rlvr_jax.batch import pack_sequences

    b = pack_sequences(prompts, [list(r) + [eos_id] for r in responses], bucket, pad_id=pad_id)
    ids = np.concatenate([b.prompt_ids, b.response_ids], axis=1)
    att = np.concatenate([b.prompt_mask, b.response_mask.astype(np.int32)], axis=1)
    loss = np.concatenate([np.zeros(b.prompt_mask.shape, np.float32), b.response_mask], axis=1)
    return {"ids": ids, "attention_mask": att, "loss_mask": loss}


def train(cfg: WarmStartConfig, tokenizer, puzzles, log_every: int = 50, verbose: bool = True,
          on_snapshot=None, snapshot_steps=()):
    """Trains the base model on ``puzzles``; returns ``(model, stats)``. After each step count in
    ``snapshot_steps`` it calls ``on_snapshot(steps_done, model, stats_so_far)`` with the model as it is then
    (the same run continues: the prior-strength sweep's weaker bases are earlier points of one warm start)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from rlvr_jax.models import Decoder

    rng = random.Random(cfg.seed + 1)
    targets = sft_targets(puzzles, cfg, rng)
    prompts = encode_examples(puzzles, tokenizer)
    enc = {}

    def ids_of(expr):
        if expr not in enc:
            enc[expr] = list(tokenizer(T.response_text(expr, cfg.show_steps), add_special_tokens=False)["input_ids"])
        return enc[expr]

    model = Decoder(model_config(cfg, tokenizer), rngs=nnx.Rngs(cfg.seed))
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.lr * 0.05)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=cfg.weight_decay))
    graphdef, params = nnx.split(model, nnx.Param)
    opt_state = tx.init(params)

    def loss_fn(params, batch):
        m = nnx.merge(graphdef, params)
        logits = m(batch["ids"], attention_mask=batch["attention_mask"])[:, :-1]
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        tgt = batch["ids"][:, 1:]
        nll = -jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
        w = batch["loss_mask"][:, 1:]
        return jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    eos, pad = int(tokenizer.eos_token_id), int(tokenizer.pad_token_id)
    losses = []
    t0 = time.perf_counter()
    for s in range(cfg.steps):
        draws = [draw_example(rng, targets, cfg) for _ in range(cfg.batch_size)]
        idx = [i for i, _ in draws]
        resp = [ids_of(e) for _, e in draws]
        batch = make_batch([prompts[i] for i in idx], resp, eos, pad, cfg.length_bucket)
        params, opt_state, loss = step(params, opt_state, {k: jnp.asarray(v) for k, v in batch.items()})
        if s % log_every == 0 or s == cfg.steps - 1:
            losses.append((s, float(loss)))
            if verbose:
                print(f"[warmstart] step {s:4d} loss {float(loss):.4f} ({time.perf_counter() - t0:.1f}s)",
                      flush=True)
        if on_snapshot is not None and s + 1 in snapshot_steps and s + 1 < cfg.steps:
            nnx.update(model, params)
            on_snapshot(s + 1, model, {"loss_curve": list(losses), "train_seconds": time.perf_counter() - t0})
    nnx.update(model, params)
    return model, {"loss_curve": losses, "train_seconds": time.perf_counter() - t0}


def max_new_tokens(cfg: WarmStartConfig) -> int:
    """Generation budget: the longest worked answer (``"9*9=81,81*9=729 \\boxed{9*9*9}"``, 24 tokens) + EOS
    and slack; 12 for the bare ``\\boxed{a*b+c}`` (7 tokens)."""
    return 32 if cfg.show_steps else 12


def sampled_accuracy(model, tokenizer, puzzles, max_tokens: int, n: int = 64, seed: int = 0,
                     temperature: float = 1.0, top_p: float = 1.0) -> dict[str, float]:
    """Mean accuracy, pass@n and the unparseable share of ``n`` temperature-1 samples per puzzle (JAX
    sampler; an answer is correct iff its last ``\\boxed{}`` is one of the puzzle's solutions)."""
    from rlvr_jax.data import encode_prompt, stop_token_ids
    from rlvr_jax.evaluation.pass_at_k import mean_pass_at_k
    from rlvr_jax.rewards.extract import last_boxed
    from rlvr_jax.rollout import SamplingParams
    from rlvr_jax.rollout.jax_sampler import JaxSampler

    eng = JaxSampler(model, pad_id=int(tokenizer.pad_token_id), eos_token_ids=stop_token_ids(tokenizer),
                     max_batch_size=256, max_new_tokens_limit=max_tokens)
    prompts = [encode_prompt(p.text(), "plain", tokenizer) for p in puzzles]
    outs = eng.generate(prompts, n, SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_tokens,
                                                   stop_token_ids=stop_token_ids(tokenizer), seed=seed))
    correct, unparsed = [], 0
    for p, o in zip(puzzles, outs):
        sols = set(T.solutions(p))
        answers = [last_boxed(t) for t in tokenizer.batch_decode([c.token_ids for c in o], skip_special_tokens=True)]
        unparsed += sum(a is None for a in answers)
        correct.append(sum(a in sols for a in answers))
    c = np.asarray(correct)
    pk = mean_pass_at_k(np.full(len(c), n), c, (1, n))
    return {"accuracy": float(pk[1]), f"pass@{n}": float(pk[n]), "unparseable": unparsed / (n * len(puzzles)),
            "fully_solved": float(np.mean(c == n))}


def _write(out_dir: str, model, tokenizer, splits, cfg: WarmStartConfig, stats: dict, verbose: bool) -> dict:
    """Checkpoint + tokenizer (``base_hf``), data splits and ``warmstart.json`` of one base."""
    from rlvr_jax.models import save_hf

    base = os.path.join(out_dir, BASE_DIR)
    tokenizer.save_pretrained(base)
    paths = {name: T.write_jsonl(T.to_problems(splits[name], name), os.path.join(out_dir, DATA_DIR, f"{name}.jsonl"))
             for name in SPLITS}
    save_hf(model, base)
    stats = dict(stats, config=dataclasses.asdict(cfg), num_params=int(model.config.num_params()),
                 split_sizes={k: len(v) for k, v in splits.items()}, data=paths, checkpoint=base,
                 # memorisation check on 128 of its own training puzzles (the held-out base: the evaluator)
                 warmstart_set=sampled_accuracy(model, tokenizer, splits["warmstart"][:128], max_new_tokens(cfg),
                                                n=16, seed=cfg.seed))
    with open(os.path.join(out_dir, "warmstart.json"), "w") as f:
        json.dump(stats, f, indent=1)
    if verbose:
        print(f"[warmstart] {stats['num_params']} params, {cfg.steps} steps; accuracy on its own puzzles "
              f"{stats['warmstart_set']['accuracy']:.3f}, pass@16 {stats['warmstart_set']['pass@16']:.3f} -> {base}",
              flush=True)
    return stats


def warm_start(out_dir: str, cfg: WarmStartConfig = WarmStartConfig(), verbose: bool = True,
               snapshots: dict[int, str] | None = None) -> dict:
    """Writes the base checkpoint, the data splits and ``warmstart.json`` under ``out_dir``; returns the
    stats dict (also in ``warmstart.json``). ``snapshots`` ``{steps: dir}`` (steps < ``cfg.steps``) also
    writes the model after ``steps`` steps of the same run into ``dir`` (its ``warmstart.json`` config says
    ``steps``, and ``snapshot_of`` the full length)."""
    from rlvr_jax.testbed.tokenizer import build_tokenizer

    t0 = time.perf_counter()
    tokenizer = build_tokenizer()
    splits = puzzle_splits(cfg)
    snapshots = dict(snapshots or {})

    def on_snapshot(steps, model, stats):
        _write(snapshots[steps], model, tokenizer, splits, dataclasses.replace(cfg, steps=steps),
               dict(stats, snapshot_of=cfg.steps), verbose)

    model, stats = train(cfg, tokenizer, splits["warmstart"], verbose=verbose, on_snapshot=on_snapshot,
                         snapshot_steps=tuple(snapshots))
    stats = _write(out_dir, model, tokenizer, splits, cfg, stats, verbose)
    stats["total_seconds"] = time.perf_counter() - t0
    with open(os.path.join(out_dir, "warmstart.json"), "w") as f:
        json.dump(stats, f, indent=1)
    return stats


def is_complete(out_dir: str) -> bool:
    """True when ``out_dir`` holds a finished warm start (checkpoint, tokenizer, data, stats)."""
    need = [os.path.join(out_dir, BASE_DIR, f) for f in ("config.json", "model.safetensors", "tokenizer.json")]
    need += [os.path.join(out_dir, DATA_DIR, f"{s}.jsonl") for s in SPLITS]
    need.append(os.path.join(out_dir, "warmstart.json"))
    return all(os.path.exists(p) for p in need)


def cli() -> None:
    """``python -m rlvr_jax.testbed.warmstart --out DIR [--config=configs/demo.py:MODE --config.warmstart.steps=N]``:
    recreates the base checkpoint from the ``warmstart`` fields of the testbed config (absl flags +
    ConfigDict, as :mod:`rlvr_jax.demo`), through :func:`rlvr_jax.cli.run_cli` (``<out>/log.txt``, summary)."""
    from absl import flags
    from ml_collections import config_flags

    from rlvr_jax.cli import HelpConfig, run_cli
    from rlvr_jax.config.overrides import exit_on_unknown_overrides
    from rlvr_jax.testbed.config import get_config

    exit_on_unknown_overrides()
    config_flags.DEFINE_config_file("config", None, "testbed config, configs/demo.py[:mode] (default: demo)",
                                    lock_config=True)
    flags.DEFINE_string("out", None, "output directory", required=True)

    def main(argv):
        del argv
        from rlvr_jax.cli.outputs import warmstart_summary
        from rlvr_jax.testbed.config import from_config

        cfg = flags.FLAGS.config
        exp, _ = from_config(cfg if cfg is not None else get_config("demo"))
        return warmstart_summary(flags.FLAGS.out, warm_start(flags.FLAGS.out, exp.warmstart))

    run_cli(main, usage=cli.__doc__, log_path=lambda: os.path.join(flags.FLAGS.out, "log.txt"),
            help_config=HelpConfig(lambda: get_config("demo"), comments_from=(get_config,),
                                   label="configs/demo.py:demo"))


if __name__ == "__main__":
    cli()
