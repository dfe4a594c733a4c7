"""Command-line override names checked against the config before flag parsing.

``ml_collections.config_flags`` answers a misspelled override (``--config.optim.learning_rate=1e-6``) with a bare
``AttributeError: "'learning_rate'"``. :func:`check_override_names` loads the config file named by
``--config=path[:arg]`` and walks every ``--config.a.b`` name first: an unknown name raises a
:class:`ConfigError` naming the field, the valid names at that level and the closest match.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import sys
from typing import Sequence

import ml_collections

from rlvr_jax.config.validate import ConfigError

# Common spellings from other frameworks -> this config's name (used as the closest match when present).
ALIASES = {"learning_rate": "lr", "epsilon": "eps", "adam_eps": "eps", "beta1": "b1", "beta2": "b2",
           "lambda": "lam", "num_samples": "n", "num_generations": "n", "max_tokens": "max_new_tokens"}


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """``path[:arg]`` -> the file's ``get_config(arg)`` (``get_config()`` without an argument)."""
    path, sep, arg = spec.partition(":")
    mod_spec = importlib.util.spec_from_file_location("_rlvr_cfg_" + os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.get_config(arg) if sep else mod.get_config()


def _override_names(argv: Sequence[str], flag: str) -> list[str]:
    names = []
    prefix = f"--{flag}."
    for a in argv:
        if a.startswith(prefix):
            names.append(a[len(prefix):].split("=", 1)[0])
        elif a.startswith(f"--no{flag}."):  # absl's boolean negation
            names.append(a[len(f"--no{flag}."):].split("=", 1)[0])
    return names


def check_name(cfg: ml_collections.ConfigDict, dotted: str) -> None:
    """Raises :class:`ConfigError` unless ``dotted`` names a field of ``cfg``."""
    node = cfg
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict):
            return  # below a plain value (a dict or tuple field): ml_collections itself decides
        keys = sorted(node.keys())
        if part not in keys:
            where = ".".join(parts[:i]) or "the config"
            close = ([ALIASES[part]] if ALIASES.get(part) in keys
                     else difflib.get_close_matches(part, keys, n=1, cutoff=0.0))
            hint = f"; did you mean {'.'.join(parts[:i] + close)!r}?" if close else ""
            raise ConfigError(dotted, f"no such field: {where} has {keys}{hint}")
        node = node[part]


def check_override_names(argv: Sequence[str], flag: str = "config", default: str | None = None) -> None:
    """Checks every ``--<flag>.a.b`` of ``argv`` against the config file given by ``--<flag>=...`` (else the
    flag's ``default`` file, when it has one)."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag}=")), None)
    if spec is None:
        i = next((j for j, a in enumerate(argv) if a == f"--{flag}"), None)
        spec = argv[i + 1] if i is not None and i + 1 < len(argv) else default
    names = _override_names(argv, flag)
    if spec is None or not names:
        return
    try:
        cfg = load_config_file(spec)
    except Exception:  # noqa: BLE001 - a broken config file is reported by config_flags itself
        return
    for name in names:
        check_name(cfg, name)


def exit_on_unknown_overrides(argv: Sequence[str] | None = None, flag: str = "config",
                              default: str | None = None) -> None:
    """:func:`check_override_names` for a command-line entry point: prints the error and exits with status 2."""
    try:
        check_override_names(sys.argv if argv is None else argv, flag, default)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
