"""`eloquence` command line: talk, console, up, status, down, worker, bench."""

from __future__ import annotations

import argparse
import sys


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eloquence", description="Self-hosted voice coach")
    sub = parser.add_subparsers(dest="command", required=True)

    talk = sub.add_parser("talk", help="one spoken turn from a WAV file through a real AgentSession")
    talk.add_argument("input", help="input WAV file (the user's question)")
    talk.add_argument("-o", "--output", default="reply.wav", help="where to write the agent's speech")
    talk.add_argument("--exercise", default="default", help="exercise type (see `eloquence exercises`)")
    talk.add_argument("--language", default=None, help="en or fr (default ELOQUENCE_LANGUAGE, else en)")
    talk.add_argument("--json", action="store_true", help="print the report as JSON")
    talk.add_argument("--no-start", action="store_true", help="do not start missing local services")

    sub.add_parser("console", help="talk to the coach with the microphone and speaker")
    sub.add_parser("exercises", help="list the registered exercises")

    up = sub.add_parser("up", help="start every local service as a process and wait until healthy")
    up.add_argument(
        "--detach", "-d", action="store_true", help="return once healthy instead of waiting for Ctrl-C"
    )
    up.add_argument("--only", nargs="*", help="start only these services")
    up.add_argument("--language", default=None, help="default session language: en or fr")
    sub.add_parser("status", help="health of every local service")
    sub.add_parser("down", help="stop every service started by `up`")

    worker = sub.add_parser("worker", help="the livekit-agents worker (dev | start)")
    worker.add_argument("mode", choices=["dev", "start"])
    worker.add_argument("--host", default="0.0.0.0", help="health endpoint interface")
    worker.add_argument(
        "--port", type=int, default=None, help="health endpoint port (default AGENT_HEALTH_PORT)"
    )

    api = sub.add_parser("api", help="the token / room HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=None)

    playground = sub.add_parser("playground", help="host local browser sessions (peer-to-peer WebRTC)")
    playground.add_argument("--host", default="127.0.0.1", help="signalling interface (loopback by default)")
    playground.add_argument("--port", type=int, default=None, help="default 8005 (PLAYGROUND_PORT)")
    playground.add_argument("--expose", action="store_true", help="allow a non-loopback --host")

    from .sip import add_arguments as add_sip_arguments

    add_sip_arguments(sub.add_parser("sip", help="phone calls: provision LiveKit SIP (`sip setup`)"))

    bench = sub.add_parser("bench", help="latency per stage, end to end, under concurrency, against peers")
    bench.add_argument("--quick", action="store_true")
    bench.add_argument("--sessions", type=int, nargs="*", default=None)
    bench.add_argument("--soak", type=int, default=0, help="turns per session for the memory soak")
    bench.add_argument(
        "--soak-minutes", type=float, default=0, help="session soak: whole AgentSessions for this long"
    )
    bench.add_argument("--soak-sessions", type=int, default=None, help="sessions in the session soak")
    bench.add_argument(
        "--agent-sessions", type=int, nargs="*", default=None, help="whole AgentSessions at once (1 2 4)"
    )
    bench.add_argument("--out", default="bench-out")
    bench.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run the peers (wyoming-faster-whisper, wyoming-piper, pipecat) in their own venv",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "talk":
        from .talk import main as talk_main

        return talk_main(args)
    if args.command == "console":
        from .console import main as console_main

        return console_main(args)
    if args.command == "exercises":
        from .exercises import print_registry

        return print_registry()
    if args.command in ("up", "status", "down"):
        from .stack import commands

        return {"up": commands.up, "status": commands.status, "down": commands.down}[args.command](args)
    if args.command == "worker":
        from .agent import run_worker

        return run_worker(args.mode, host=args.host, port=args.port)
    if args.command == "playground":
        from .playground.host import main as playground_main

        return playground_main(args)
    if args.command == "api":
        from .api import main as api_main

        return api_main(args)
    if args.command == "sip":
        from .sip import main as sip_main

        return sip_main(args)
    if args.command == "bench":
        from eloquence_bench import main as bench_main

        return bench_main(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
