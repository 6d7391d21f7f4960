"""Settings, built once at start-up from Ollama's environment variables and Herd's own HERD_*."""

from __future__ import annotations

import ipaddress
import logging
import os
import tempfile
from collections.abc import Mapping, MutableMapping
from urllib.parse import urlsplit

import msgspec

from herd.protocol.durations import DurationError, env_keep_alive_ns, parse_go_duration

DEFAULT_PORT = 11434
# Imported on first start (HERD_DEFAULT_MODEL; empty skips it): an instruction-tuned model that
# answers and stops by itself (gateway/store/default_model.py).
DEFAULT_MODEL = "smollm2:135m"
log = logging.getLogger("herd")


class Settings(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    models_dir: str = os.path.expanduser("~/.ollama/models")
    keep_alive_ns: int = 5 * 60 * 1_000_000_000
    num_parallel: int = 4
    max_loaded_models: int = 3  # OLLAMA_MAX_LOADED_MODELS
    # Unset (or 0), it means three per GPU, as Ollama's default; set, it is the total.
    max_loaded_per_gpu: bool = True
    max_replicas: int = 0  # HERD_MAX_REPLICAS; 0 = as many as the devices a model fits on
    sched_spread: bool = False  # OLLAMA_SCHED_SPREAD: split every model across a node's GPUs
    devices: str = ""  # HERD_DEVICES, on a worker: devices described by hand (simulated)
    # HERD_RUNNER_TIMEOUT: a runner silent this long with requests in flight is hung
    runner_stall_s: float = 120.0
    max_queue: int = 512
    context_length: int = 0  # OLLAMA_CONTEXT_LENGTH; 0: Ollama's VRAM tier (gateway/cluster/spec.py)
    num_batch: int = 512
    num_threads: int = 0
    load_timeout_s: float = 300.0  # OLLAMA_LOAD_TIMEOUT; infinite when ≤ 0 is asked for
    kv_cache_type: str = "f16"  # OLLAMA_KV_CACHE_TYPE: f16, q8_0 or q4_0
    flash_attention: str = "auto"  # OLLAMA_FLASH_ATTENTION: auto, on or off
    gpu_overhead: int = 0  # OLLAMA_GPU_OVERHEAD: bytes of each GPU no model may take
    origins: tuple[str, ...] = ()
    # Worker nodes to connect to; empty means `herd serve` starts a local one.
    workers: tuple[str, ...] = ()
    node_bind: str = ""
    runner_host: str = "127.0.0.1"
    run_dir: str = ""
    default_model: str = DEFAULT_MODEL
    default_model_file: str = ""  # a GGUF for the default model, instead of the PyPI package
    noprune: bool = False
    # HERD_API_KEYS: when any is set, every route but GET/HEAD / needs one of them as a bearer.
    api_keys: tuple[str, ...] = ()
    tls_cert: str = ""  # HERD_TLS_CERT / HERD_TLS_KEY: PEM files; both set serves HTTPS
    tls_key: str = ""
    # CURVE on TCP links (protocol/curve.py): a worker's own key and the folder of gateways'
    # public keys it accepts; a gateway's own key and the workers' public key.
    curve_secret_key: str = ""
    curve_authorized: str = ""
    curve_server_key: str = ""
    drain_timeout_s: float = 30.0  # SIGTERM: how long in-flight work may take to finish
    lease_timeout_s: float = 15.0  # a node forgets a gateway whose heartbeats stop this long
    max_runners_per_peer: int = 8  # runners one gateway may hold on one node
    max_message_bytes: int = 64 * 1024 * 1024  # largest message a runner accepts (ZMQ MAXMSGSIZE)
    discovery_interval_s: float = 10.0  # how often HERD_WORKERS host names are re-resolved


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip().strip("\"'")
    try:
        return int(raw) if raw else default
    except ValueError:
        log.warning("invalid environment variable %s=%r, using the default %s", name, raw, default)
        return default


def _bool(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "").strip().strip("\"'").lower()
    if raw and raw not in allowed:
        log.warning("%s=%s is not one of %s: using %s", name, raw, ", ".join(allowed), default)
    return raw if raw in allowed else default


def _flash_attention(raw: str) -> str:
    value = raw.strip().strip("\"'").lower()
    if value in ("1", "true", "on", "yes"):
        return "on"
    if value in ("0", "false", "off", "no"):
        return "off"
    return "auto"


def _load_timeout_s(raw: str) -> float:
    """Go duration or seconds, like Ollama's; zero or negative means wait for ever."""
    text = raw.strip().strip("\"'")
    if not text:
        return 300.0
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_go_duration(text) / 1e9
        except DurationError:
            log.warning("OLLAMA_LOAD_TIMEOUT=%s is not a duration: using 5m", text)
            return 300.0
    return seconds if seconds > 0 else float("inf")


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """Go duration or seconds; anything else (or ≤ 0) keeps the default."""
    text = env.get(name, "").strip().strip("\"'")
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_go_duration(text) / 1e9
        except DurationError:
            log.warning("%s=%s is not a duration: using %gs", name, text, default)
            return default
    return seconds if seconds > 0 else default


def _path(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    return os.path.abspath(os.path.expanduser(value)) if value else ""


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in env.get(name, "").split(",") if v.strip())


def _api_keys(raw: str) -> tuple[str, ...]:
    """Comma-separated keys, or `@path` to a file with one key a line (blank lines and `#`
    comments skipped), so keys need not sit in the process environment."""
    raw = raw.strip().strip("\"'")
    if not raw.startswith("@"):
        return tuple(k.strip() for k in raw.split(",") if k.strip())
    path = os.path.expanduser(raw[1:])
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except OSError as e:
        # Refusing to start beats serving without the keys the operator asked for.
        raise SystemExit(f"HERD_API_KEYS: cannot read {path}: {e}") from None
    keys = tuple(line for line in lines if line and not line.startswith("#"))
    if not keys:
        raise SystemExit(f"HERD_API_KEYS: {path} holds no key")
    return keys


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    host, port = _host_port(env.get("OLLAMA_HOST", ""))
    keep_alive = env.get("OLLAMA_KEEP_ALIVE", "").strip()
    models_dir = env.get("OLLAMA_MODELS", "").strip() or os.path.expanduser("~/.ollama/models")
    run_dir = env.get("HERD_RUN_DIR", "").strip() or tempfile.mkdtemp(prefix="herd-")
    max_loaded = _int(env, "OLLAMA_MAX_LOADED_MODELS", 0)
    return Settings(
        host=host,
        port=port,
        models_dir=os.path.abspath(os.path.expanduser(models_dir)),
        keep_alive_ns=env_keep_alive_ns(keep_alive) if keep_alive else 5 * 60 * 1_000_000_000,
        num_parallel=max(_int(env, "OLLAMA_NUM_PARALLEL", 4), 1),
        max_loaded_models=max_loaded if max_loaded > 0 else 3,
        max_loaded_per_gpu=max_loaded <= 0,
        max_replicas=max(_int(env, "HERD_MAX_REPLICAS", 0), 0),
        sched_spread=_bool(env, "OLLAMA_SCHED_SPREAD"),
        devices=env.get("HERD_DEVICES", "").strip(),
        runner_stall_s=float(max(_int(env, "HERD_RUNNER_TIMEOUT", 120), 1)),
        max_queue=max(_int(env, "OLLAMA_MAX_QUEUE", 512), 0),
        context_length=max(_int(env, "OLLAMA_CONTEXT_LENGTH", 0), 0),
        num_batch=max(_int(env, "HERD_NUM_BATCH", 512), 32),
        num_threads=_int(env, "HERD_NUM_THREADS", 0),
        origins=_list(env, "OLLAMA_ORIGINS"),
        workers=_list(env, "HERD_WORKERS"),
        node_bind=env.get("HERD_NODE_BIND", "").strip(),
        runner_host=env.get("HERD_RUNNER_HOST", "").strip() or "127.0.0.1",
        run_dir=run_dir,
        default_model=env.get("HERD_DEFAULT_MODEL", DEFAULT_MODEL).strip(),
        default_model_file=env.get("HERD_DEFAULT_MODEL_FILE", "").strip(),
        noprune=_bool(env, "OLLAMA_NOPRUNE"),
        load_timeout_s=_load_timeout_s(env.get("OLLAMA_LOAD_TIMEOUT", "")),
        kv_cache_type=_choice(env, "OLLAMA_KV_CACHE_TYPE", KV_CACHE_TYPES, "f16"),
        flash_attention=_flash_attention(env.get("OLLAMA_FLASH_ATTENTION", "")),
        gpu_overhead=max(_int(env, "OLLAMA_GPU_OVERHEAD", 0), 0),
        api_keys=_api_keys(env.get("HERD_API_KEYS", "")),
        tls_cert=os.path.expanduser(env.get("HERD_TLS_CERT", "").strip()),
        tls_key=os.path.expanduser(env.get("HERD_TLS_KEY", "").strip()),
        curve_secret_key=_path(env, "HERD_CURVE_SECRET_KEY"),
        curve_authorized=_path(env, "HERD_CURVE_AUTHORIZED"),
        curve_server_key=_path(env, "HERD_CURVE_SERVER_KEY"),
        drain_timeout_s=_seconds(env, "HERD_DRAIN_TIMEOUT", 30.0),
        lease_timeout_s=_seconds(env, "HERD_LEASE_TIMEOUT", 15.0),
        max_runners_per_peer=max(_int(env, "HERD_MAX_RUNNERS_PER_PEER", 8), 1),
        max_message_bytes=max(_int(env, "HERD_MAX_MESSAGE_BYTES", 64 * 1024 * 1024), 1024 * 1024),
        discovery_interval_s=_seconds(env, "HERD_DISCOVERY_INTERVAL", 10.0),
    )


def _host_port(value: str) -> tuple[str, int]:
    """OLLAMA_HOST: [scheme://]host[:port][/path]. No scheme: port 11434; http:// → 80,
    https:// → 443 when no port is given; ":port" alone listens on every interface."""
    value = value.strip().strip("\"'").strip()
    if not value:
        return "127.0.0.1", DEFAULT_PORT
    default_port = DEFAULT_PORT
    if "://" in value:
        scheme, value = value.split("://", 1)
        default_port = {"http": 80, "https": 443}.get(scheme.lower(), DEFAULT_PORT)
    value = value.split("/", 1)[0]
    try:
        return str(ipaddress.ip_address(value)), default_port  # a bare IPv6 address
    except ValueError:
        pass
    parts = urlsplit(f"//{value}")
    host = parts.hostname
    if host is None:
        host = "0.0.0.0" if value.startswith(":") else "127.0.0.1"
    try:
        port = parts.port
    except ValueError:
        port = None
    return host, port if port is not None else default_port


def log_level(env: MutableMapping[str, str]) -> str:
    """HERD_LOG_LEVEL, else Ollama's OLLAMA_DEBUG: 1 = debug; 2 = trace, which here also lets
    the runners (they inherit the environment) print llama.cpp's own log."""
    explicit = env.get("HERD_LOG_LEVEL", "").strip().upper()
    if explicit in logging.getLevelNamesMapping():
        return explicit
    debug = env.get("OLLAMA_DEBUG", "").strip().strip("\"'").lower()
    if debug in ("2", "trace"):
        env.setdefault("HERD_LLAMA_VERBOSE", "1")
    return "DEBUG" if debug in ("1", "2", "true", "debug", "trace") else "INFO"
