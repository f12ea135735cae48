"""Start and stop Parity's production stack on this machine's local services (PostgreSQL,
Redis DB 3, RabbitMQ queue `bench`) for the load benchmarks flood.py, overhead.py, pool.py.

    .venv/bin/python bench/stack.py up [--workers 1] [--web-workers 1] [--port 8000] \\
        [--database parity_stack] [--max-num-seqs 128] [--state-dir var/stack]
    .venv/bin/python bench/stack.py down [--state-dir var/stack]
    .venv/bin/python bench/stack.py kill-worker [--index 0] [--state-dir var/stack]
    .venv/bin/python bench/stack.py add-worker [--state-dir var/stack]

`up` runs what README "Running in production" runs (migrate, `parity web`, one niced
`parity worker` per engine), each process in its own process group logging to
<state-dir>/<name>.log, waits until the API answers and every engine has joined the gate,
writes <state-dir>/stack.json ({"url", "keys": {tenant: secret}, "pids": {name: pid}}) and
prints the benchmark command lines. Tenants: heavy=1, light=2, w1=1, w4=4, solo=1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from psycopg import sql
from rich import progress
from rich.console import Console

# Run as a script from anywhere: make the repository root importable (workers, tenants).
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BIN = ROOT / ".venv" / "bin"
QUEUE = "bench"  # its own queue: a stray test worker on `gpu` never takes its messages
REDIS_URL = "redis://127.0.0.1:6379/3"  # the test suite uses DBs 0 and 7
GATE_WORKERS = f"parity:gate:{QUEUE}:workers"  # worker -> capacity, one entry per live engine
TENANTS = {"heavy": 1, "light": 2, "w1": 1, "w4": 4, "solo": 1}
KEY_NAME = "bench"
READY_TIMEOUT_S = 240.0  # an engine takes 30-40 s to start here, longer side by side
STOP_GRACE_S = 60.0
STATE_FILE = "stack.json"
console = Console()
Process = subprocess.Popen[bytes]


class StackError(RuntimeError):
    """Start-up failed; `log` names the process whose log tail explains it."""

    def __init__(self, message: str, log: str | None = None) -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True, slots=True)
class StackConfig:
    """What the environment of every process is made from; kept in stack.json."""

    database: str = "parity_stack"
    max_num_seqs: int = 128
    port: int = 8000

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def stack_env(config: StackConfig) -> dict[str, str]:
    """The one environment of the web process, the engine workers and the setup steps."""
    return os.environ | {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{config.database}",
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
        "SECRET_KEY": "bench-stack-not-secret",
        "DEBUG": "false",
        "HF_HUB_OFFLINE": "1",
        "PARITY_MAX_NUM_SEQS": str(config.max_num_seqs),
        "PARITY_ENGINE_QUEUE": QUEUE,
        "PARITY_MODEL_PATH": str(ROOT / "var" / "models" / "parity-tiny"),
        "LOG_LEVEL": "WARNING",
    }


def create_database(name: str) -> None:
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as db:
        if db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def run_step(argv: list[str], env: dict[str, str]) -> str:
    """Run one setup command with the stack's environment; its stdout, or StackError."""
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise StackError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def prepare(config: StackConfig, env: dict[str, str]) -> dict[str, str]:
    """Model, database, schema, an empty Redis DB and queue, fresh keys: tenant -> secret."""
    from workers.tiny_model import ensure_tiny_model

    ensure_tiny_model(env["PARITY_MODEL_PATH"])
    create_database(config.database)
    run_step([str(BIN / "parity"), "manage", "migrate", "--verbosity", "0"], env)
    redis.Redis.from_url(REDIS_URL).flushdb()  # old gate leases and streams would skew it
    # Django reads its settings from the environment once, so seed in a child that has ours.
    out = run_step([sys.executable, str(Path(__file__).resolve()), "seed"], env)
    return dict(json.loads(out.strip().splitlines()[-1]))


def seed(_: argparse.Namespace) -> int:
    """(Run by `up` in the stack's environment.) Purge the queue, print fresh keys as JSON."""
    import django

    django.setup()
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_declare(QUEUE, durable=True, auto_delete=False)
        conn.default_channel.queue_purge(QUEUE)  # requests left over from a killed stack
    print(json.dumps({slug: issue_key(slug, weight) for slug, weight in TENANTS.items()}))
    return 0


def issue_key(slug: str, weight: int) -> str:
    """Create or reset the tenant (weight, no concurrency limit), revoke its old bench
    keys and issue a new one; the secret is shown only now."""
    from tenants import services
    from tenants.audit import Actor
    from tenants.models import ApiKey, Tenant, TenantStatus

    actor = Actor.system("bench_stack")
    tenant = Tenant.objects.filter(slug=slug).first()
    fields = {"weight": Decimal(weight), "max_concurrent_requests": None}
    if tenant is None:
        tenant = Tenant(slug=slug, name=slug, **fields)
        services.create(actor, tenant)
    else:
        services.update(actor, tenant, fields | {"status": TenantStatus.ACTIVE})
    for old in ApiKey.objects.usable().filter(tenant=tenant, name=KEY_NAME):
        services.revoke_key(actor, old)
    return services.issue_key(actor, tenant, KEY_NAME).secret


def start(name: str, argv: list[str], env: dict[str, str], state_dir: Path) -> Process:
    """Start in a new process group, so the group takes the engine's children down with it."""
    with (state_dir / f"{name}.log").open("ab") as log:  # the child keeps its own handle
        return subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


def start_worker(index: int, env: dict[str, str], state_dir: Path) -> Process:
    # As the README advises on a machine with few cores: the engine's processes run nicer
    # than the worker (vLLM's engine busy-polls, and on two cores it would starve the web
    # tier and the worker's own intake and token relay). Niceing the whole worker instead
    # (STACK_WORKER_NICE=10) slowed a light tenant's path through it under a flood.
    # PARITY_ENGINE_NICE=0 measures the engine at full priority.
    nice = os.environ.get("STACK_WORKER_NICE", "0")
    env = {"PARITY_ENGINE_NICE": "10"} | env
    argv = ["nice", "-n", nice, str(BIN / "parity"), "worker", "--name", f"bench-{index}@%h"]
    return start(f"worker-{index}", argv, env, state_dir)


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the group's live processes; zombies count as gone, since
    nobody may reap them before this launcher exits."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after "(comm)"
            if fields[0] != "Z" and int(fields[2]) == pgid:
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
                members.append((int(stat.parent.name), cmdline.decode(errors="replace")))
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return members


def signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(pgid, signum)


def stop_groups(pids: list[int]) -> None:
    """SIGTERM each leader (Celery's warm shutdown stops its engine after the running
    requests; a group-wide SIGTERM would stop the engine under them), then SIGKILL the
    groups still alive after STOP_GRACE_S."""
    for pid in pids:
        # Only a leader still in its own group: a killed worker's pid may be reused since.
        if any(member == pid for member, _ in group_members(pid)):
            with contextlib.suppress(ProcessLookupError):  # it may end meanwhile
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    with console.status("stopping the stack"):
        while any(group_members(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.5)
    for pid in pids:
        signal_group(pid, signal.SIGKILL)


def web_answers(url: str, key: str) -> bool:
    try:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.get(f"{url}/v1/models", headers=headers, timeout=2, trust_env=False).is_success
    except httpx.HTTPError:
        return False  # not listening yet


def gate_workers() -> set[str]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    return {str(name) for name in client.hkeys(GATE_WORKERS)}


def wait_ready(url: str, key: str, processes: dict[str, Process], num_new: int) -> None:
    """Until the API answers and `num_new` engines joined the gate since the call."""
    before = gate_workers()
    columns = (progress.SpinnerColumn(), progress.TextColumn("{task.description}"))
    more = (progress.BarColumn(), progress.MofNCompleteColumn(), progress.TimeElapsedColumn())
    with progress.Progress(*columns, *more, console=console) as bar:
        task = bar.add_task("engines in the gate", total=num_new)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            for name, process in processes.items():
                if process.poll() is not None:
                    raise StackError(f"{name} exited with {process.returncode}", log=name)
            web = web_answers(url, key)
            joined = len(gate_workers() - before)
            bar.update(task, completed=joined, description=f"web {'up' if web else '...'}, engines")
            if web and joined >= num_new:
                return
            if time.monotonic() > deadline:
                raise StackError(f"not ready after {READY_TIMEOUT_S:.0f} s")
            time.sleep(1)


def print_log_tail(state_dir: Path, name: str, num_lines: int = 40) -> None:
    path = state_dir / f"{name}.log"
    lines = path.read_text(errors="replace").splitlines()[-num_lines:] if path.exists() else []
    console.rule(f"last {len(lines)} lines of {path}")
    console.print("\n".join(lines), markup=False, highlight=False)


def load_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / STATE_FILE
    if not path.exists():
        raise SystemExit(f"no stack recorded in {path}: run `bench/stack.py up` first")
    return dict(json.loads(path.read_text()))


def save_state(state_dir: Path, state: dict[str, Any]) -> None:
    """Write stack.json, or remove it once no process is recorded."""
    path = state_dir / STATE_FILE
    if state["pids"]:
        path.write_text(json.dumps(state, indent=2) + "\n")
    else:
        path.unlink(missing_ok=True)


def launch(state_dir: Path, state: dict[str, Any], new: dict[str, Process], num: int) -> int:
    """Record the new processes, then wait for the API and `num` more engines; if that
    fails, show why, stop the new processes and forget them."""
    state["pids"].update({name: process.pid for name, process in new.items()})
    save_state(state_dir, state)  # before waiting, so `down` finds a half-started stack
    try:
        wait_ready(state["url"], state["keys"]["solo"], new, num)
    except (StackError, KeyboardInterrupt) as error:
        if isinstance(error, StackError) and error.log:
            print_log_tail(state_dir, error.log)
        console.print(f"[red]start-up failed:[/] {error or 'interrupted'}")
        stop_groups([process.pid for process in new.values()])
        save_state(state_dir, state | {"pids": dict(state["pids"].items() - new.keys())})
        return 1
    return 0


def bench_commands(url: str, keys: dict[str, str]) -> list[str]:
    run = f".venv/bin/python bench/{{}}.py --url {url}"
    return [
        run.format("flood") + f" --heavy-key {keys['heavy']} --light-key {keys['light']}",
        run.format("pool") + f" --key-w1 {keys['w1']} --key-w4 {keys['w4']}",
        run.format("overhead") + f" --key {keys['solo']}",
    ]


def up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    if (state_dir / STATE_FILE).exists() and any(
        map(group_members, load_state(state_dir)["pids"].values())
    ):
        raise SystemExit(f"a stack is already up ({state_dir / STATE_FILE}): run down first")
    config = StackConfig(args.database, args.max_num_seqs, args.port)
    env = stack_env(config)
    with console.status("creating the database, migrating, seeding tenants"):
        keys = prepare(config, env)
    web = [str(BIN / "parity"), "web", "--bind", f"127.0.0.1:{config.port}"]
    new = {"web": start("web", [*web, "--workers", str(args.web_workers)], env, state_dir)}
    new |= {f"worker-{i}": start_worker(i, env, state_dir) for i in range(args.workers)}
    state = {"url": config.url, "keys": keys, "pids": {}, "config": asdict(config)}
    if launch(state_dir, state, new, args.workers):
        return 1
    console.print(f"[green]Parity is up on {config.url}[/] ({state_dir / STATE_FILE})")
    for line in bench_commands(config.url, keys):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0


def down(args: argparse.Namespace) -> int:
    state = load_state(args.state_dir)
    stop_groups(list(state["pids"].values()))
    save_state(args.state_dir, state | {"pids": {}})
    console.print(f"stopped {', '.join(state['pids'])}")
    return 0


def kill_worker(args: argparse.Namespace) -> int:
    name = f"worker-{args.index}"
    pid = load_state(args.state_dir)["pids"].get(name)
    if pid is None:
        raise SystemExit(f"no {name} in {args.state_dir / STATE_FILE}")
    members = group_members(pid)
    signal_group(pid, signal.SIGKILL)  # the whole group: vLLM's engine core outlives its parent
    for member, cmdline in members:
        console.print(f"killed {member}: {cmdline}", markup=False, highlight=False)
    console.print(f"{name} (group {pid}): {len(members)} processes killed")
    return 0


def add_worker(args: argparse.Namespace) -> int:
    state = load_state(args.state_dir)
    # Killed workers stay recorded, so a new one never reuses a log file or a Celery name.
    names = [name for name in state["pids"] if name.startswith("worker-")]
    index = 1 + max((int(name.removeprefix("worker-")) for name in names), default=-1)
    env = stack_env(StackConfig(**state["config"]))
    new = {f"worker-{index}": start_worker(index, env, args.state_dir)}
    if launch(args.state_dir, state, new, 1):
        return 1
    console.print(f"[green]worker-{index}[/] (pid {new[f'worker-{index}'].pid}) joined the gate")
    return 0


def positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return int(value)


def database_name(value: str) -> str:
    # It goes into DATABASE_URL unquoted, so only a plain identifier will do.
    if not value.isidentifier() or not value.isascii():
        raise argparse.ArgumentTypeError(f"expected a plain identifier, got {value!r}")
    return value


def parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    root = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    commands = root.add_subparsers(required=True, metavar="COMMAND")
    for name, run, text in [
        ("up", up, "migrate, seed tenants, start web and engine workers, wait until ready"),
        ("down", down, "SIGTERM each process, SIGKILL its group after 60 s"),
        ("kill-worker", kill_worker, "SIGKILL one engine worker's whole process group"),
        ("add-worker", add_worker, "start one more engine worker and wait until it joins"),
        ("seed", seed, None),  # internal: `up` runs it in the stack's environment
    ]:
        # A parser given no help is left out of the listing.
        shown: dict[str, Any] = {"help": text} if text else {}
        command = commands.add_parser(
            name, formatter_class=argparse.ArgumentDefaultsHelpFormatter, **shown
        )
        command.add_argument("--state-dir", type=Path, default=ROOT / "var" / "stack")
        command.set_defaults(run=run)
    up_args = commands.choices["up"]
    up_args.add_argument("--workers", type=positive, default=1, help="engine workers")
    up_args.add_argument("--web-workers", type=positive, default=1, help="uvicorn processes")
    up_args.add_argument("--port", type=positive, default=8000, help="loopback port of the API")
    up_args.add_argument("--database", type=database_name, default="parity_stack")
    up_args.add_argument("--max-num-seqs", type=positive, default=128, help="per engine")
    commands.choices["kill-worker"].add_argument("--index", type=int, default=0)
    return root


def main() -> int:
    args = parser().parse_args()
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
