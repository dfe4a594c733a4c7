"""What the command lines print (rlvr_jax/cli): library INFO records only in the log file, the project's own
lines and warnings on the terminal, a user's mistake as one line with exit status 2, ``--help`` with the config
fields and their defaults, the vLLM server start announced with its log path, the bench's CPU sizes.

The README's tiny training command itself runs in tests/test_doc_commands.py, whose check
``check_tiny_run_is_quiet`` asserts its line count, its closing summary and the library detail in log.txt.
"""
from __future__ import annotations

import logging
import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags

from rlvr_jax.cli import app as cli_app
from rlvr_jax.cli.logs import Logs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    return env


def test_a_bad_config_value_is_one_line_and_exit_2():
    """The issue's example: 34 traceback lines and exit 1 before; one line naming the field, exit 2 now."""
    res = subprocess.run([sys.executable, "-m", "rlvr_jax.train", "--config=configs/nsr_qwen3.py",
                          "--config.rollout.n=-3"], capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.splitlines() == ["error: config field 'rollout.n': must be >= 1, got -3"], res.stderr[-3000:]
    assert res.stdout == ""


def test_an_unloadable_config_file_is_one_line(monkeypatch, tmp_path):
    """ml_collections keeps a placeholder for a config file it could not load (and fails on first use, deep in the
    job); run_cli's flag parsing reports it at once. A config file's own exception loses its traceback."""
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config file", flag_values=fv, lock_config=True)
    fv(["prog", f"--config={tmp_path}/missing.py"])
    monkeypatch.setattr(cli_app, "FLAGS", fv)
    msg = cli_app._unloadable_config()
    assert msg == (f"--config={tmp_path}/missing.py: cannot load the config file "
                   f"([Errno 2] No such file or directory: '{tmp_path}/missing.py')")
    text = ("flag --config=c.py:foo: Error whilst parsing config file: Traceback (most recent call last):\n"
            '  File "c.py", line 3, in get_config\n    raise ValueError("x")\nValueError: unknown algorithm \'foo\'\n')
    assert cli_app._flag_error_message(text) == ("flag --config=c.py:foo: Error whilst parsing config file: "
                                                 "ValueError: unknown algorithm 'foo'")


def test_help_lists_the_config_fields_with_the_files_defaults_and_comments(capsys):
    from rlvr_jax.config.base import get_base_config

    cli_app.define_log_level()
    cli_app.print_help("usage line", cli_app.HelpConfig(get_base_config, comments_from=(get_base_config,)),
                       ["--config=configs/tiny_cpu.py:nsr", "--help"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "usage line"
    assert "config fields (--config.FIELD=value; defaults of configs/tiny_cpu.py:nsr):" in out
    # tiny_cpu's value (base: 1024), with the comment of rlvr_jax/config/base.py
    assert any(line.startswith("  --config.data.max_prompt_len=192  # prompts longer than this") for line in out), out
    assert any(line.startswith("  --config.algo.name='nsr'") for line in out), out
    assert "  --log_level: <debug|info|warning|error>" in "\n".join(out)
    names = [line.split("=")[0] for line in out if line.startswith("  --config.")]
    assert len(names) > 100 and names == sorted(names)


def _record(name: str, level: int, msg: str, pathname: str = "/lib/x.py") -> logging.LogRecord:
    return logging.LogRecord(name, level, pathname, 1, msg, None, None)


def test_terminal_gets_project_lines_and_warnings_only():
    """The terminal's filter and format at the default level: library INFO records are dropped, the project's own
    INFO records (its loggers, absl called from its files) shown like its printed lines, warnings tagged."""
    from rlvr_jax.cli.logs import ConsoleFilter, ShortFormatter

    project_file = str(ROOT / "rlvr_jax" / "trainer" / "run_setup.py")
    records = [_record("orbax.checkpoint", logging.INFO, "orbax: 25 lines per checkpoint"),
               _record("absl", logging.INFO, "absl from a library"),
               _record("rlvr_jax.rollout.vllm_server", logging.INFO, "starting vLLM server log: /y"),
               _record("absl", logging.INFO, "resumed", pathname=project_file),
               _record("jax", logging.WARNING, "a library warning"),
               _record("rlvr_jax.data", logging.DEBUG, "project debug")]
    shown = [ShortFormatter().format(r) for r in records if ConsoleFilter(logging.WARNING).filter(r)]
    assert shown == ["[vllm_server] starting vLLM server log: /y", "[run_setup] resumed", "[warning] a library warning"]
    assert [r.getMessage() for r in records if ConsoleFilter(logging.INFO).filter(r)] == [
        r.getMessage() for r in records[:5]]


def test_log_file_holds_every_record_and_printed_line_in_order(tmp_path, capsys):
    """The log file's directory appears later (as a run's out_dir does): records and stdout lines are held, then
    written in order; library INFO records are in it."""
    root = logging.getLogger()
    level = root.level
    path = tmp_path / "run" / "log.txt"
    logs = Logs("warning").install()
    try:
        logs.set_path(str(path))
        logging.getLogger("orbax.checkpoint").info("orbax: 25 lines per checkpoint")
        print("[train] a printed line")
        logging.getLogger("jax").warning("a library warning")
        assert not path.exists()
        path.parent.mkdir()
        logging.getLogger("orbax.checkpoint").info("orbax: after the directory exists")
        logs.record_exception(ValueError("boom"))
    finally:
        logs.uninstall()
        root.setLevel(level)
    assert capsys.readouterr().out == "[train] a printed line\n"  # stdout is copied, not taken
    text = path.read_text()
    order = ["orbax: 25 lines per checkpoint", "[train] a printed line", "a library warning",
             "orbax: after the directory exists", "ValueError: boom"]
    positions = [text.find(x) for x in order]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), text


FAKE_VLLM = """\
#!{python}
# Stands in for `python -m vllm.entrypoints.openai.api_server ... --port P`: answers GET /health with 200.
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def test_a_vllm_server_start_is_announced_with_its_log_path(tmp_path, caplog):
    from rlvr_jax.rollout.vllm_server import VLLMServer, VLLMServerConfig

    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_VLLM.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "out" / "vllm_server.log"
    cfg = VLLMServerConfig(model=str(tmp_path), device="cpu", python=str(fake), log_path=str(log),
                           die_with_parent=False, max_num_batched_tokens=2048, startup_timeout_s=60)
    with caplog.at_level(logging.INFO, logger="rlvr_jax.rollout.vllm_server"):
        server = VLLMServer.launch(cfg)
        try:
            url = server.url
        finally:
            server.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "rlvr_jax.rollout.vllm_server"]
    assert len(lines) == 2, lines
    assert lines[0] == f"starting vLLM server on {url} ({tmp_path}; usually 30-60 s) log: {log}"
    assert lines[1].startswith(f"vLLM server on {url} ready after ")


def test_bench_cpu_sizes_fill_only_the_flags_not_given():
    from rlvr_jax.bench.progress import CPU_SIZES, apply_size, gpu_sized_on_cpu_hint

    fv = flags.FlagValues()
    gpu_defaults = dict(preset="qwen3-1.7b", batch=4, seq_len=2048, prompt_len=256, steps=5, warmup=2,
                        sampler_batch=256, sampler_prompt_len=256, new_tokens=1024, sampler_repeats=2,
                        decode_steps=4096)
    for name, value in gpu_defaults.items():
        (flags.DEFINE_string if isinstance(value, str) else flags.DEFINE_integer)(name, value, "", flag_values=fv)
    fv(["bench", "--preset", "tiny-qwen3", "--batch", "2"])
    hint = gpu_sized_on_cpu_hint(fv, "cpu", "gpu")
    assert hint is not None and "learner 2x2048, sampler 256x(256+1024)" in hint and "--size cpu" in hint
    assert gpu_sized_on_cpu_hint(fv, "gpu", "gpu") is None
    assert apply_size(fv, "gpu") == {}
    changed = apply_size(fv, "cpu")
    assert changed == {k: v for k, v in CPU_SIZES.items() if k not in ("preset", "batch")}
    assert (fv.preset, fv.batch, fv.seq_len, fv.new_tokens) == ("tiny-qwen3", 2, CPU_SIZES["seq_len"],
                                                                CPU_SIZES["new_tokens"])
    assert gpu_sized_on_cpu_hint(fv, "cpu", "cpu") is None


@pytest.mark.parametrize("exc,line", [
    (FileNotFoundError(2, "No such file or directory", "/ckpt/x"), "error: No such file or directory: /ckpt/x"),
    (ValueError("a\n  b"), None),
])
def test_user_errors_are_one_line_and_others_keep_their_traceback(exc, line, capsys):
    from rlvr_jax.cli import errors

    assert errors.is_user_error(exc) == (line is not None)
    if line is not None:
        errors.report(exc, "/run/log.txt", verbose=False)
        assert capsys.readouterr().err == f"{line} (traceback in /run/log.txt)\n"


def test_the_tiny_command_check_counts_lines_as_the_terminal_shows_them():
    """check_tiny_run_is_quiet (tests/test_doc_commands.py) fails on a flooded terminal or a missing summary."""
    from test_doc_commands import terminal_lines

    flooded = "I1203 orbax.py:1] x\n" * 20 + "== train done: step 1/1\n"
    assert len(terminal_lines(flooded)) == 21
    bar = "rl:   0%|  | 0/4\rrl:  25%|# | 1/4\rrl: 100%|##| 4/4\n== train done\n"
    assert terminal_lines(bar) == ["rl: 100%|##| 4/4", "== train done"]
