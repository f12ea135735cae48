"""Where a benchmark's load goes: Parity's gateway, or vLLM's own OpenAI server started
here as the yardstick (same engine settings, same FairScheduler); and the flags the
benchmark scripts share. Not a script of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.loadgen import ROOT, Endpoint, T, console

# --- vLLM's own OpenAI server, the yardstick ---------------------------------------------

DEFAULT_MODEL_DIR = ROOT / "var" / "models" / "parity-tiny"
READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 20.0
# The yardstick takes its weights from us alone, and has no Parity worker to report to.
UNINHERITED_ENV = ("PARITY_CONTROL_ADDRESS", "PARITY_WEIGHTS_FILE")


class VllmServer:
    """vLLM's OpenAI server with Parity's engine settings and FairScheduler, as a subprocess.

    It runs in its own process group and is killed as a group: the engine-core children
    outlive a killed parent otherwise, holding a core and 1.5 GB each.
    """

    def __init__(self, model_dir: Path, port: int, *, model: str, weights: str = "") -> None:
        self.model_dir, self.port, self.model, self.weights = model_dir, port, model, weights
        self.key = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = Path(tempfile.mkstemp(prefix="parity-bench-vllm-", suffix=".log")[1])
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> VllmServer:
        try:
            self._process = self._start()
            self._wait_ready(self._process)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def endpoint(self, tenant: str) -> Endpoint:
        """Every tenant shares the server's key; FairScheduler reads the tenant from xargs."""
        return Endpoint(self.url, self.key, tenant, xargs=tenant)

    def command(self) -> list[str]:
        # The README's command for vLLM's server with FairScheduler (it execs the server).
        return [sys.executable, "-m", "workers.vllm_serve", str(self.model_dir), *[
            "--served-model-name", self.model,
            "--max-model-len", "512", "--kv-cache-memory-bytes", "134217728",
            "--max-num-seqs", "128", "--dtype", "float32", "--enforce-eager",
            "--api-key", self.key, "--host", "127.0.0.1", "--port", str(self.port),
        ]]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if name not in UNINHERITED_ENV}
        env.update(PYTHONPATH=str(ROOT), VLLM_TARGET_DEVICE="cpu", HF_HUB_OFFLINE="1")
        env["PARITY_WEIGHTS"] = self.weights
        return env

    def _start(self) -> subprocess.Popen[bytes]:
        from workers.tiny_model import ensure_tiny_model  # needs the repo root on sys.path

        ensure_tiny_model(self.model_dir)
        console.print(f"starting vLLM's server on {self.url} (log: {self.log_path})")
        with self.log_path.open("wb") as log:  # the child keeps its own copy of the handle
            return subprocess.Popen(
                self.command(), env=self.environment(), cwd=ROOT, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"vLLM's server exited during start-up; see {self.log_path}")
            try:
                url = f"{self.url}/v1/models"
                if httpx.get(url, headers=headers, timeout=2, trust_env=False).is_success:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(1)
        raise RuntimeError(f"vLLM's server not ready after {READY_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self._process is None:
            return
        _signal_group(self._process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=STOP_GRACE_S)
        # Always sweep the group: children can outlive a parent that exited cleanly.
        _signal_group(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._process = None


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(pgid, signum)


# --- command lines -----------------------------------------------------------------------


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the docstring's example command lines as written, and shows every default."""


def make_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose --help is the script's docstring, example command line included."""
    return argparse.ArgumentParser(description=doc, formatter_class=_HelpFormatter)


def loopback_url(value: str) -> str:
    """argparse type: an http(s) URL on a loopback address; benchmarks never leave the host."""
    parts = urlsplit(value)
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme not in ("http", "https") or not loopback:
        raise argparse.ArgumentTypeError(f"{value!r} is not an http URL on a loopback address")
    return value.rstrip("/")


def add_server_args(parser: argparse.ArgumentParser, *, vllm_default: bool) -> None:
    parser.add_argument(
        "--url",
        type=loopback_url,
        default="http://127.0.0.1:8000",
        help="Parity's gateway",
    )
    parser.add_argument("--model", default="parity-tiny", help="served model name")
    parser.add_argument(
        "--vllm",
        action=argparse.BooleanOptionalAction,
        default=vllm_default,
        help="also measure vLLM's own OpenAI server as the yardstick",
    )
    parser.add_argument(
        "--vllm-model-dir",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="model for vLLM's server; written if missing",
    )
    parser.add_argument(
        "--vllm-port", type=int, default=8100, help="port for vLLM's server (loopback only)"
    )


def add_target_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        choices=("parity", "vllm", "both"),
        default="both",
        help="both: Parity, then vLLM's server unless --no-vllm",
    )


def chosen_targets(args: argparse.Namespace) -> list[str]:
    if getattr(args, "target", "both") == "both":
        return ["parity", "vllm"] if args.vllm else ["parity"]
    return [args.target]


def vllm_server(args: argparse.Namespace, weights: str = "") -> VllmServer:
    return VllmServer(args.vllm_model_dir, args.vllm_port, model=args.model, weights=weights)


def check_parity_keys(
    parser: argparse.ArgumentParser, targets: Sequence[str], keys: dict[str, str | None]
) -> None:
    """Parity needs each tenant's key (flag -> value); vLLM's server makes its own."""
    missing = [flag for flag, key in keys.items() if not key]
    if "parity" in targets and missing:
        parser.error(f"measuring Parity needs {', '.join(missing)} (or --target vllm)")


def run_on(
    target: str,
    args: argparse.Namespace,
    *,
    keys: dict[str, str],
    weights: str,
    measure: Callable[[dict[str, Endpoint]], Coroutine[object, object, T]],
) -> T:
    """Run `measure` on Parity (tenants known by their `keys`) or on a fresh vLLM server
    whose FairScheduler gets `weights` ("tenant=weight,...") and the same tenant names."""
    if target == "parity":
        return asyncio.run(measure({t: Endpoint(args.url, key, t) for t, key in keys.items()}))
    with vllm_server(args, weights) as server:
        return asyncio.run(measure({tenant: server.endpoint(tenant) for tenant in keys}))
