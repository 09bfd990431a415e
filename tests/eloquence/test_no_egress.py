"""No egress: `eloquence talk` completes a spoken turn in a network namespace that has only loopback.

This is "on-prem, without OpenAI" measured rather than claimed: Whisper, the LLM and Piper all start
inside the namespace (its loopback has its own ports, so the default ports are free), and nothing
outside can be reached. Where the kernel allows it the namespace gets its own PID namespace too, so
nothing started inside can outlive the test.

Creating namespaces needs root or unprivileged user namespaces. Where the kernel refuses, the test
skips and says why: the only skip here, and only after actually trying.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from eloquence_bench.quality import wer

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "question.wav"
SAMPLE_TEXT = "How can I calm my nerves before a big presentation?"

pytestmark = pytest.mark.slow

# Run inside the namespace: bring loopback up, prove there is no way out, then the main job.
INSIDE = r"""
set -e
ip link set lo up
"$PYTHON" - <<'EOF'
import socket
for target in (("1.1.1.1", 443), ("8.8.8.8", 53)):
    try:
        socket.create_connection(target, timeout=3).close()
        print("EGRESS-OPEN", target)
    except OSError as e:
        print("EGRESS-BLOCKED", target, e.errno)
try:
    socket.getaddrinfo("api.openai.com", 443)
    print("DNS-OPEN")
except OSError:
    print("DNS-BLOCKED")
print("INTERFACES", sorted(name for _, name in socket.if_nameindex()))
EOF
exec "$PYTHON" -m eloquence talk "$SAMPLE" -o "$OUT_WAV" --json --exercise confidence_boost > "$REPORT"
"""


def _unshare_commands() -> list[list[str]]:
    """Namespace launchers to try, most isolating first."""
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    return [
        ["unshare", *user, "--net", "--pid", "--fork", "--mount-proc"],
        ["unshare", *user, "--net"],
    ]


def _namespace_launcher() -> list[str]:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("unshare (util-linux) and ip (iproute2) are needed: apt-get install util-linux iproute2")
    refusals = []
    for command in _unshare_commands():
        probe = subprocess.run(
            [*command, "sh", "-c", "ip link set lo up && echo ok"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "ok":
            return command
        refusals.append(f"`{' '.join(command)}`: {probe.stderr.strip() or probe.returncode}")
    pytest.skip("the kernel does not let this user create a network namespace: " + "; ".join(refusals))


def test_talk_succeeds_with_loopback_only(tmp_path: Path) -> None:
    launcher = _namespace_launcher()
    report_path, out_wav = tmp_path / "report.json", tmp_path / "reply.wav"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRAL_", "AZURE_SPEECH_"))}
    env.update(
        {
            "PYTHON": sys.executable,
            "SAMPLE": str(SAMPLE),
            "OUT_WAV": str(out_wav),
            "REPORT": str(report_path),
            "ELOQUENCE_STATE_DIR": str(tmp_path / "state"),
            "PYTHONPATH": str(ROOT),
            "LLM_THREADS": "1",
        }
    )
    # Default URLs and ports on purpose: inside the namespace they are free, and they are loopback.
    for variable in ("WHISPER_STT_URL", "AZURE_TTS_URL", "PIPER_TTS_URL", "LOCAL_LLM_URL", "LIVEKIT_URL"):
        env.pop(variable, None)
    proc = subprocess.Popen(
        [*launcher, "bash", "-c", INSIDE],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    # The namespace really had no way out.
    assert "EGRESS-OPEN" not in stdout and stdout.count("EGRESS-BLOCKED") == 2, stdout
    assert "DNS-BLOCKED" in stdout, stdout
    assert "INTERFACES ['lo']" in stdout, stdout

    written = report_path.read_text() if report_path.exists() else ""
    assert proc.returncode == 0, f"talk failed without network:\n{stderr[-4000:]}\n{written}"
    report = json.loads(report_path.read_text())
    # Recognition quality is the talk and whisper-stt tests' business; here: real words were heard.
    assert wer(SAMPLE_TEXT, report["transcript"]) <= 0.4, report["transcript"]
    assert report["reply"].strip(), report
    assert out_wav.stat().st_size > 44 + 16000  # more than a header: real reply audio
    log_dir = tmp_path / "state" / "logs"
    assert {p.name for p in log_dir.iterdir()} >= {"whisper-stt.log", "azure-tts.log", "local-llm.log"}
