"""Reliability checks run by ``validate_config``: values that would otherwise fail only after start-up (or train
silently on nonsense) are rejected before any compute, each with a :class:`ConfigError` naming the field.

Fail or warn (docs/reliability.md): everything here **fails**; nothing only warns. A value that is legal but
almost surely wrong is rejected with the fix in the message, because a warning scrolls by in the first seconds of
a run that then burns hours:

* ``optim.lr > 1`` (AdamW moves each weight by about ``lr`` per update: > 1 destroys the model in one step);
* ``rollout.top_k >= vocab_size`` (keeps every token: a silent no-op; ``-1`` disables top-k);
* ``optim.eps <= 0`` (Adam divides by ``sqrt(v) + eps``; a weight with a zero gradient would get 0/0);
* an unknown ``data.template``, ``data.grade_timeout_s <= 0``, ``data.grade_workers < 0``,
  ``train.seed < 0`` (numpy's seed sequences reject it at the first step), a vLLM ``max_model_len`` shorter
  than ``data.max_prompt_len + rollout.max_new_tokens``; ``rollout.vllm.dtype='auto'`` under a float32 learner
  (vLLM's auto serves float32 checkpoints in half precision);
* ``data.max_prompt_len + rollout.max_new_tokens`` (and ``rollout.vllm.max_model_len`` with the vLLM engine) above
  the model's ``max_position_embeddings`` (the preset's or ``model.hf_path``'s config.json);
* with ``check_files``: ``logging.out_dir``, ``checkpoint.dir`` (and ``rollout.sync_dir``) must be creatable and
  writable (a probe file is created and removed), not an existing file.

:func:`check_prompt_budget` needs the tokenizer, so the trainer calls it right after loading the tokenizer and
before tokenising the dataset: ``data.max_prompt_len`` must leave room for at least one problem token after the
template's own tokens.
"""
from __future__ import annotations

import json
import math
import os
import tempfile

from rlvr_jax.config.validate import ConfigError

MAX_LR = 1.0


def _check(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise ConfigError(field, message)


def model_config_value(cfg, key: str) -> int | None:
    """An integer field of the configured model's config (``model.preset``, else ``hf_path/config.json``;
    ``text_config`` of multimodal configs), None if unknown."""
    m = cfg.model
    if m.preset and not m.hf_path:
        from rlvr_jax.models import get_preset
        try:
            v = getattr(get_preset(m.preset), key, None)
        except (KeyError, ValueError):
            return None
        return int(v) if v is not None else None
    path = os.path.join(m.hf_path, "config.json") if m.hf_path else ""
    if path and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
            d = d.get("text_config", d)
            return int(d[key]) if d.get(key) is not None else None
        except (OSError, ValueError, TypeError):
            return None
    return None


def model_vocab_size(cfg) -> int | None:
    """The vocabulary size of the configured model (preset or ``hf_path/config.json``), None if unknown."""
    return model_config_value(cfg, "vocab_size")


def check_context(cfg) -> None:
    """The longest sequence the run makes (``data.max_prompt_len`` + ``rollout.max_new_tokens``, and the held-out
    evaluation's ``logging.eval_max_new_tokens``) and vLLM's ``rollout.vllm.max_model_len`` fit the model's
    ``max_position_embeddings``: beyond it a generation would crawl through positions the model never saw (the
    JAX sampler) or vLLM would refuse to start, both long after start-up."""
    d, r, lg = cfg.data, cfg.rollout, cfg.logging
    limit = model_config_value(cfg, "max_position_embeddings")
    if limit is None:
        return
    src = f"model.hf_path={cfg.model.hf_path!r}" if cfg.model.hf_path else f"model.preset={cfg.model.preset!r}"
    need = int(d.max_prompt_len) + int(r.max_new_tokens)
    _check(need <= limit, "rollout.max_new_tokens",
           f"data.max_prompt_len + rollout.max_new_tokens = {d.max_prompt_len} + {r.max_new_tokens} = {need} exceeds "
           f"the model's max_position_embeddings {limit} ({src}); lower rollout.max_new_tokens (or "
           f"data.max_prompt_len)")
    if int(lg.eval_every) > 0 and int(lg.eval_max_new_tokens) > 0:
        need = int(d.max_prompt_len) + int(lg.eval_max_new_tokens)
        _check(need <= limit, "logging.eval_max_new_tokens",
               f"data.max_prompt_len + logging.eval_max_new_tokens = {need} exceeds the model's "
               f"max_position_embeddings {limit} ({src})")
    if r.engine == "vllm":
        _check(int(r.vllm.max_model_len) <= limit, "rollout.vllm.max_model_len",
               f"{r.vllm.max_model_len} exceeds the model's max_position_embeddings {limit} ({src}): vLLM would "
               f"refuse to start; set it to at most {limit}")


def check_values(cfg) -> None:
    """Value checks that need no file system (see the module docstring)."""
    from rlvr_jax.data.templates import TEMPLATES
    d, r, o, t, lg = cfg.data, cfg.rollout, cfg.optim, cfg.train, cfg.logging
    _check(math.isfinite(o.lr) and o.lr <= MAX_LR, "optim.lr",
           f"{o.lr} is above {MAX_LR}: AdamW would move every weight by about lr per update (typical RL values "
           f"are 1e-7 to 1e-5; the tiny CPU model uses 1e-3)")
    _check(cfg.model.nonfinite_weights in ("error", "warn"), "model.nonfinite_weights",
           f"{cfg.model.nonfinite_weights!r} not in ('error', 'warn')")
    _check(o.eps > 0, "optim.eps", f"Adam's epsilon must be > 0, got {o.eps}")
    _check(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {o.min_lr_ratio}")
    _check(r.top_k == -1 or r.top_k >= 1, "rollout.top_k", f"must be -1 (disabled) or >= 1, got {r.top_k}")
    vocab = model_vocab_size(cfg)
    _check(vocab is None or r.top_k < vocab, "rollout.top_k",
           f"{r.top_k} >= the vocabulary size {vocab}: top-k would keep every token (use -1 to disable top-k)")
    _check(d.template in TEMPLATES, "data.template", f"unknown prompt template {d.template!r}; expected one of "
                                                     f"{TEMPLATES}")
    _check(math.isfinite(d.grade_timeout_s) and d.grade_timeout_s > 0, "data.grade_timeout_s",
           f"must be > 0 seconds, got {d.grade_timeout_s}")
    _check(int(d.grade_workers) >= 0, "data.grade_workers",
           f"must be >= 0 (0 grades in the trainer's process), got {d.grade_workers}")
    _check(int(t.seed) >= 0, "train.seed", f"must be >= 0, got {t.seed}")
    _check(int(lg.eval_max_new_tokens) >= 0, "logging.eval_max_new_tokens",
           f"must be >= 0 (0 = rollout.max_new_tokens), got {lg.eval_max_new_tokens}")
    check_context(cfg)
    if r.engine == "vllm":
        v = r.vllm
        _check(int(v.num_servers) >= 1, "rollout.vllm.num_servers", f"must be >= 1, got {v.num_servers}")
        urls = [u for u in str(v.url).split(",") if u.strip()]
        _check(not urls or int(v.num_servers) in (1, len(urls)), "rollout.vllm.num_servers",
               f"{v.num_servers} with {len(urls)} URL(s) in rollout.vllm.url: attached servers are the URLs given "
               f"(comma-separated); leave num_servers at 1 or set it to the URL count")
        _check(v.transport in ("auto", "shm", "filesystem"), "rollout.vllm.transport",
               f"{v.transport!r}; expected auto, shm or filesystem")
        _check(v.dtype in ("", "auto", "float32", "bfloat16", "float16"), "rollout.vllm.dtype",
               f"{v.dtype!r}; expected '' (= model.dtype), auto, float32, bfloat16 or float16")
        # vLLM's 'auto' never computes in float32 (it downcasts float32 checkpoints to half precision): a float32
        # learner would take ratios against rollouts of another numeric policy without saying so
        _check(not (v.dtype == "auto" and cfg.model.dtype == "float32"), "rollout.vllm.dtype",
               "'auto' with model.dtype='float32': vLLM serves float32 checkpoints in half precision; use '' (the "
               "servers compute in model.dtype) or name the dtype (bfloat16 for half-precision rollouts on purpose)")
        _check(int(v.max_concurrency) >= 1, "rollout.vllm.max_concurrency", f"must be >= 1, got {v.max_concurrency}")
        _check(int(v.port) >= 0, "rollout.vllm.port", f"must be >= 0 (0 = free ports), got {v.port}")
        ndev = len([x for x in str(v.devices).split(",") if x.strip()])
        _check(ndev % int(v.num_servers) == 0, "rollout.vllm.devices",
               f"{v.devices!r} ({ndev} devices) cannot be split evenly over {v.num_servers} servers")
        need = int(d.max_prompt_len) + int(r.max_new_tokens)
        _check(int(r.vllm.max_model_len) >= need, "rollout.vllm.max_model_len",
               f"{r.vllm.max_model_len} < data.max_prompt_len + rollout.max_new_tokens = {need}: the server would "
               f"refuse the longest prompts")


def _probe_dir(path: str, field: str) -> None:
    """``path`` exists as a writable directory, or can be created: a probe file / directory is made and removed."""
    p = os.path.abspath(path)
    if os.path.exists(p) and not os.path.isdir(p):
        raise ConfigError(field, f"{path!r} exists and is not a directory")
    anc = p
    while not os.path.exists(anc):
        anc = os.path.dirname(anc)
    if not os.path.isdir(anc):
        raise ConfigError(field, f"{path!r} cannot be created: {anc!r} is a file")
    try:
        if anc == p:
            fd, probe = tempfile.mkstemp(prefix=".rlvr_write_probe_", dir=p)
            os.close(fd)
            os.remove(probe)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".rlvr_write_probe_", dir=anc))
    except OSError as e:
        where = p if anc == p else anc
        raise ConfigError(field, f"{path!r} is not writable ({where}: {e.strerror or e})") from None


def check_output_dirs(cfg) -> None:
    """The run's output, checkpoint and (vLLM) weight-sync directories are writable (probe files)."""
    out = cfg.logging.out_dir
    _probe_dir(out, "logging.out_dir")
    _probe_dir(cfg.checkpoint.dir or os.path.join(out, "checkpoints"), "checkpoint.dir")
    if cfg.rollout.engine == "vllm":
        _probe_dir(cfg.rollout.sync_dir or os.path.join(out, "weights"), "rollout.sync_dir")


def check_prompt_budget(cfg, tokenizer) -> int:
    """``data.max_prompt_len`` exceeds the template's own token count; returns that count."""
    from rlvr_jax.data.templates import encode_prompt
    overhead = len(encode_prompt("", cfg.data.template, tokenizer))
    _check(int(cfg.data.max_prompt_len) > overhead, "data.max_prompt_len",
           f"{cfg.data.max_prompt_len} leaves no room for a problem: template {cfg.data.template!r} alone takes "
           f"{overhead} tokens")
    return overhead
