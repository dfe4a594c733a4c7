"""The base experiment config: every field the trainer reads, with verl-like defaults.

Each file in ``configs/`` starts from :func:`get_base_config` and sets only what differs, so a field has
exactly one default. Every field can be overridden from the command line, e.g.
``python -m rlvr_jax.train --config=configs/nsr_qwen3.py --config.optim.lr=2e-6``.

Batch-size conventions (verl's):
  * ``train.prompt_batch_size`` prompts are sampled per RL step, each with ``rollout.n`` rollouts.
  * ``train.mini_batch_size`` is counted in *prompts*; one optimizer update per mini-batch, so an RL step
    makes ``ppo_epochs * prompt_batch_size / mini_batch_size`` updates (the paper: 1024 / 256 = 4, the later
    ones off-policy). With ``algo.sample_selection="drop"`` a mini-batch holds ``mini_batch_size * n`` kept
    rows and a step makes ``ppo_epochs * ceil(kept rows / (mini_batch_size * n))`` updates.
    ``train.num_mini_batches > 0`` overrides the mini-batch size
    (``mini_batch_size = prompt_batch_size / num_mini_batches``): ``num_mini_batches=1`` makes every update
    on-policy, which is the one-flag ablation of "does NSR need clipping + off-policy mini-batches".
  * ``train.micro_batch_size`` is counted in *sequences* (global, across the mesh); gradients of micro-batches
    are accumulated exactly (sum of loss sums / sum of denominators).
"""
from __future__ import annotations

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    """Every config field with its default and a one-line comment: the schema (validated by
    ``rlvr_jax.config.validate``). One literal on purpose (about 150 lines): the single place each field is defined,
    read top to bottom; splitting it per section would scatter the schema."""
    c = ml_collections.ConfigDict()

    c.model = ml_collections.ConfigDict(dict(
        hf_path="",            # Hugging Face checkpoint directory (config.json + safetensors); wins over preset
        preset="",             # rlvr_jax.models.get_preset name, random init (benchmarks, tiny tests)
        tokenizer_path="",     # defaults to hf_path; required with a preset
        dtype="bfloat16",      # compute dtype
        param_dtype="float32",  # master weights (AdamW states follow)
        remat="none",          # rematerialisation policy passed to ModelConfig.remat
        attention_impl="xla",  # jax.nn.dot_product_attention implementation: xla | cudnn
        # KV-cache decode attention of the JAX sampler: xla (masks the whole cache) | pallas (GPU: the Pallas
        # decode kernel reads only the filled slots of a head-major cache; CPU runs it interpreted, slow)
        decode_attention_impl="xla",
        logprob_chunk_size=1024,  # sequence chunk for the chunked log-softmax (memory knob)
        nonfinite_weights="error",  # NaN/inf in the loaded hf_path weights: error | warn (load anyway)
    ))

    c.data = ml_collections.ConfigDict(dict(
        data_dir="",            # empty: $RLVR_DATA_DIR, else ../shared/data (rlvr_jax.data.default_data_dir)
        train="math_train",
        template="qwen_boxed",  # rlvr_jax.data.templates name
        max_prompt_len=1024,    # prompts longer than this (in tokens) are dropped and counted
        reward_format="pm1",    # pm1: {-1,+1} (the paper); 01: {0,1}
        grade_timeout_s=10.0,
        grade_workers=4,
    ))

    c.rollout = ml_collections.ConfigDict(dict(
        engine="jax",          # jax (in-process sampler) | vllm (OpenAI-compatible server)
        n=8,
        temperature=1.0,
        top_p=1.0,
        top_k=-1,
        max_new_tokens=3072,
        sync_dir="",           # where weight versions are exported for vLLM (default: <out_dir>/weights)
        jax=ml_collections.ConfigDict(dict(  # the in-process sampler (rlvr_jax.rollout.jax_sampler)
            scheduler="continuous",  # continuous (slots refilled) | static (chunks decode to their longest row)
            # continuous: most decode steps per compiled call (then the host resumes it, and a pending SIGTERM
            # stops the generation: this bounds the stop's latency; the samples do not depend on it)
            decode_steps=256,
            refill_rows=0,       # continuous: prompts prefilled per refill call (0 = an eighth of the slots)
        )),
        vllm=ml_collections.ConfigDict(dict(
            url="",            # attach to running servers (comma-separated URLs); empty = start num_servers
            num_servers=1,     # replicas started by the trainer (each its own port; on GPU its own devices)
            devices="",        # GPU ids split evenly over the servers (CUDA_VISIBLE_DEVICES each); empty = no split
            port=0,            # 0 = free ports; else server i listens on port + i
            transport="auto",  # weight sync: shm (shared memory, same host) | filesystem | auto (shm when possible)
            shm_dir="",        # where the shm transport's segments live (default /dev/shm)
            dtype="",          # the servers' dtype; empty = model.dtype; auto = vLLM's (never float32)
            max_concurrency=32,  # prompts in flight per server (each with rollout.n samples)
            python="",         # interpreter with vllm installed (default: this one)
            gpu_memory_utilization=0.5,
            tensor_parallel_size=1,
            max_model_len=4096,
            enforce_eager=False,
            extra_args="",
            startup_timeout_s=600.0,
        )),
    ))

    # Neutral defaults: every algorithm's values come from its preset (rlvr_jax/config/presets.py, which sets
    # every field below for every algorithm), so nothing an algorithm depends on is decided here.
    c.algo = ml_collections.ConfigDict(dict(
        name="grpo",            # rlvr_jax.objectives registry name (one spelling: configs, CLI, docs)
        lam=0.1,                # W-REINFORCE weight on positive samples (Eq. 11)
        use_clip=True,          # PPO-style clipped ratio; False = unclipped ratio (ablation)
        clip_eps_low=0.2,
        clip_eps_high=0.2,
        clip_ratio_c=0.0,       # dual-clip PPO cap for A < 0 (verl's clip_ratio_c, its default 3); 0 = off
        log_ratio_clamp=20.0,   # clamp log(pi/pi_old) (and log(pi_ref/pi) in KL) to +-this before exp; 0 = off
        kl_value_clamp=0.0,     # clamp the per-token KL estimate to +-this (verl: 10 on k3); 0 = off
        kl_coef=0.0,            # beta
        kl_in_reward=False,     # PPO: KL penalty folded into the reward; GRPO: in the loss
        kl_estimator="k3",      # k1 | k2 | k3 (low-variance)
        use_reference=False,    # keep a frozen reference policy (needed when kl_coef > 0)
        entropy_coef=0.0,       # entropy bonus c (loss -= c H); the paper presets set it
        loss_agg_mode="token-mean",  # token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm
        form="clipped",         # PSR/NSR/W-REINFORCE/REINFORCE: clipped (paper D.1) | logprob | prob (Eq. 6)
        # correctness (+1 correct / -1 incorrect, any reward format) | raw (reward as advantage)
        # | grpo (group-normalised) | gae (critic)
        adv_estimator="grpo",
        norm_adv_by_std=True,   # GRPO: divide by the group std (+eps)
        whiten_advantages=False,  # (A - mean) * rsqrt(var + 1e-8) over the batch's tokens (verl's PPO)
        # drop: rows the objective does not learn from (PSR: incorrect, NSR: correct) leave the batch before the
        # mini-batches are formed (the NSR paper's released code); mask: they stay, masked (Eq. 3/4 literally)
        sample_selection="mask",
        gamma=1.0,
        gae_lambda=1.0,
        # PPO critic: clipped value loss 0.5 max((V-G)^2, (V_old + clip(V-V_old, +-c) - G)^2), c = value_clip
        # (verl's critic.cliprange_value, default 0.5); 0 = unclipped 0.5 (V-G)^2. Read only by ppo.
        value_clip=0.5,
        # rollout-learner mismatch (rlvr_jax.trainer.rollout_correction): none | token_tis (weights min(pi_old /
        # pi_rollout, C) on the policy-gradient term) | seq_mask (drop sequences whose geometric-mean ratio
        # leaves [1/C, C]); the rollout_corr/* metrics are logged in every mode
        rollout_correction="none",
        rollout_correction_cap=2.0,  # C > 1
        # remedies (docs/objectives.md "Remedies", rlvr_jax/config/schedule.py, objectives/group_shaping.py)
        schedule="",            # phases "NAME:LEN,...,NAME" (LEN steps or PCT% of total_steps); "" = one algorithm
        unlikeliness_beta=0.0,  # GRPO advantages: correct rewards x (1 - beta rank/G), rank by likelihood; 0 = off
        gate_max_correct=-1,    # train only on prompts with <= this many correct rollouts; -1 = off
        simko_top_k=3,          # simko: K top candidates sharing a correct token's gradient
        simko_alpha=0.01,       # simko: share of that gradient moved to the top-K (at high-entropy tokens)
        simko_tau=0.8,          # simko: a token is high-entropy above this quantile of its response's entropies
        simko_lambda=1.1,       # simko: advantage scale on incorrect top-1 high-entropy tokens
    ))

    c.optim = ml_collections.ConfigDict(dict(
        lr=1e-6,
        weight_decay=0.01,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        grad_clip=1.0,          # global-norm clip; <= 0 disables
        warmup_steps=0,         # optimizer updates of linear warm-up
        schedule="constant",    # constant | cosine (after warm-up, down to min_lr_ratio * lr)
        min_lr_ratio=0.0,
        critic_lr=1e-5,         # PPO value model
        critic_warmup_steps=0,
        mu_dtype="float32",     # Adam first-moment dtype: float32 | bfloat16 (less memory and traffic)
    ))

    c.train = ml_collections.ConfigDict(dict(
        seed=0,
        total_steps=140,          # RL steps (the NSR paper's scripts: 20 epochs x floor(7,500 / 1,024) = 7 steps)
        prompt_batch_size=1024,
        mini_batch_size=256,      # prompts per optimizer update
        num_mini_batches=0,       # > 0 overrides mini_batch_size (see module docstring)
        micro_batch_size=8,       # sequences per gradient-accumulation micro-batch (global)
        ppo_epochs=1,
        shuffle=True,             # prompt order: a seeded shuffle of the data set each epoch (verl's data.shuffle)
        shuffle_minibatches=False,  # shuffle rows into mini-batches each PPO epoch (verl's actor.shuffle)
        max_nonfinite_in_a_row=5,  # this many skipped (non-finite) updates in a row stop the run
        length_bucket=128,        # sequences are right-padded to a multiple of this many tokens
        export_final=True,        # save_hf the final policy into <out_dir>/final_hf
        # 0: generate batch k with the weights it updates; 1: one-step off-policy, batch k+1 is generated with v_k
        # while step k updates v_k (vLLM: overlapped on a background thread; JAX engine: inline), rlvr_jax.trainer.offpolicy
        off_policy_steps=0,
    ))

    c.mesh = ml_collections.ConfigDict(dict(
        shape=ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tp": 1}),
        rules=(),                 # () = rlvr_jax.sharding defaults; else ((logical, mesh_axis_or_None), ...)
    ))

    c.checkpoint = ml_collections.ConfigDict(dict(
        dir="",                   # default: <out_dir>/checkpoints
        every=50,                 # RL steps between checkpoints (and always at the end)
        keep=3,
        resume=True,              # continue from the latest checkpoint in dir when there is one
        init_from="",             # optional orbax checkpoint to initialise from (must exist)
        # resume although the checkpoint was trained with other algo / optim / model / data / seed / batch
        # settings (refused otherwise, listing the fields); the change is recorded in config_history.jsonl
        allow_config_change=False,
    ))

    c.logging = ml_collections.ConfigDict(dict(
        out_dir="runs/default",
        jsonl=True,
        tensorboard=True,
        every=1,
        progress=True,
        eval_every=20,            # RL steps between held-out greedy evaluations; 0 disables
        eval_n=64,                # problems per held-out evaluation
        eval_datasets=("math500",),
        eval_max_new_tokens=0,    # 0 = rollout.max_new_tokens
    ))

    c.distributed = ml_collections.ConfigDict(dict(
        coordinator="",           # host:port; empty + num_processes<=0 = read env / single process
        num_processes=-1,
        process_id=-1,
    ))
    return c
