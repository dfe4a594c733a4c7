"""Issue 27 finding 5: what SIGTERM / SIGINT do, timed from signal to exit in child processes (signal_job.py).

The first signal says what will happen and stops a long generation within seconds (the JAX sampler checks the
stop request between compiled calls; the last completed step is checkpointed); the second aborts at once, even
while the main thread waits for a compiled XLA call (no Python handler runs there: the guard's watcher thread
reads the signal from ``signal.set_wakeup_fd``).
"""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from rlvr_jax.trainer.checkpointing import Checkpointer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _start(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)  # one CPU device
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "signal_job.py"), *args], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    for stream, tag in ((p.stdout, "out"), (p.stderr, "err")):
        threading.Thread(target=lambda s=stream, t=tag: [lines.put((t, time.time(), ln)) for ln in s],
                         daemon=True).start()
    return p, lines


def _until(lines, pred, timeout):
    seen = []
    end = time.time() + timeout
    while time.time() < end:
        try:
            item = lines.get(timeout=max(0.01, end - time.time()))
        except queue.Empty:
            break
        seen.append(item)
        if pred(item):
            return item, seen
    raise AssertionError(f"not seen within {timeout} s: {[s[2] for s in seen][-20:]}")


def test_second_signal_aborts_at_once_while_xla_runs():
    p, lines = _start("xla")
    try:
        _until(lines, lambda x: x[2].strip() == "ready", 120)
        t0 = time.time()
        p.send_signal(signal.SIGTERM)
        (_, t1, msg), _ = _until(lines, lambda x: "checkpointing after this step" in x[2], 10)
        assert "SIGTERM again to abort at once" in msg
        t2 = time.time()
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=10)
        t3 = time.time()
    finally:
        p.kill()
    print(f"\nfirst signal -> message {t1 - t0:.2f} s; second signal -> exit {t3 - t2:.2f} s (XLA loop in flight)")
    assert rc == 128 + signal.SIGINT
    assert t1 - t0 < 2.0 and t3 - t2 < 2.0


def test_first_signal_during_generation_exits_within_seconds_with_the_last_step_saved(tmp_path):
    out, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    for name in ("math_train", "math500"):
        (data / f"{name}.jsonl").write_text("".join(
            json.dumps({"id": str(i), "problem": f"What is {i}+{i}?", "answer": str(2 * i)}) + "\n" for i in range(4)))
    p, lines = _start("train", str(out), str(data), "builtin:bytes")  # the byte tokenizer: nothing to build
    try:
        (_, _, sent), _ = _until(lines, lambda x: x[2].startswith("signal_sent_at="), 240)
        t_sig = float(sent.split("=")[1])
        rc = p.wait(timeout=60)
        t_exit = time.time()
        rest = []
        while not lines.empty():
            rest.append(lines.get()[2])
    finally:
        p.kill()
    latency = t_exit - t_sig
    rows = [json.loads(x) for x in open(out / "metrics.jsonl")]
    print(f"\nSIGTERM 1 s into step 1's generation (up to 8 x 1,536 tokens) -> exit {latency:.2f} s")
    text = "".join(rest)
    assert rc == 0 and "[signal_job] steps_done=1 preempted=True" in text, text[-3000:]
    assert "generation_stopped_at=" in text  # the sampler stopped mid-generation (GenerationStopped)
    assert [r["step"] for r in rows] == [1]  # step 1 (index 1) was cut short, not logged
    assert Checkpointer(str(out / "checkpoints")).latest_step() == 1
    assert latency < 5.0
