"""protocol/config.py: Settings from Ollama's environment variables (spec §9)."""

from __future__ import annotations

import os
import pathlib

import pytest

from herd.protocol.config import DEFAULT_PORT, Settings, settings_from_env
from herd.protocol.durations import FOREVER_NS

MIN_NS = 60 * 1_000_000_000


@pytest.fixture
def run_dir(tmp_path: pathlib.Path) -> str:
    return str(tmp_path / "run")


def settings(run_dir: str, **env: str) -> Settings:
    """settings_from_env over exactly `env` (never the process environment)."""
    return settings_from_env({"HERD_RUN_DIR": run_dir, **env})


# OLLAMA_HOST


def test_default_port_is_11434() -> None:
    assert DEFAULT_PORT == 11434


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        ("", "127.0.0.1", 11434),
        ("   ", "127.0.0.1", 11434),
        ("0.0.0.0", "0.0.0.0", 11434),
        ("1.2.3.4", "1.2.3.4", 11434),
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("example.com", "example.com", 11434),
        ("example.com:1234", "example.com", 1234),
        ("http://example.com", "example.com", 80),
        ("https://h", "h", 443),
        ("https://1.2.3.4:1234", "1.2.3.4", 1234),
        ("http://example.com:8000/ollama", "example.com", 8000),
        ("[::1]:1337", "::1", 1337),
        ("[::]", "::", 11434),
        ('"1.2.3.4"', "1.2.3.4", 11434),
        (" '1.2.3.4' ", "1.2.3.4", 11434),
    ],
)
def test_ollama_host_forms(run_dir: str, value: str, host: str, port: int) -> None:
    s = settings(run_dir, OLLAMA_HOST=value)
    assert (s.host, s.port) == (host, port)


def test_missing_ollama_host_binds_loopback_11434(run_dir: str) -> None:
    s = settings(run_dir)
    assert (s.host, s.port) == ("127.0.0.1", 11434)


def test_port_only_host_keeps_the_port(run_dir: str) -> None:
    assert settings(run_dir, OLLAMA_HOST=":9999").port == 9999


@pytest.mark.parametrize("value", ["127.0.0.1:66000", "127.0.0.1:abc", "127.0.0.1:-1"])
def test_invalid_port_falls_back_to_the_default(run_dir: str, value: str) -> None:
    s = settings(run_dir, OLLAMA_HOST=value)
    assert (s.host, s.port) == ("127.0.0.1", 11434)


def test_port_only_host_listens_on_all_interfaces(run_dir: str) -> None:
    assert settings(run_dir, OLLAMA_HOST=":9999").host in {"", "0.0.0.0"}


def test_unbracketed_ipv6_host(run_dir: str) -> None:
    s = settings(run_dir, OLLAMA_HOST="::1")
    assert (s.host, s.port) == ("::1", 11434)


def test_space_inside_quotes_is_trimmed(run_dir: str) -> None:
    s = settings(run_dir, OLLAMA_HOST=' " 1.2.3.4 " ')
    assert (s.host, s.port) == ("1.2.3.4", 11434)


# OLLAMA_MODELS


def test_models_dir_defaults_to_home_ollama_models(run_dir: str) -> None:
    expected = os.path.abspath(os.path.expanduser("~/.ollama/models"))
    assert settings(run_dir).models_dir == expected


def test_models_dir_from_env_is_absolute(run_dir: str, tmp_path: pathlib.Path) -> None:
    assert settings(run_dir, OLLAMA_MODELS=f" {tmp_path}/models ").models_dir == f"{tmp_path}/models"
    assert os.path.isabs(settings(run_dir, OLLAMA_MODELS="rel/models").models_dir)


# OLLAMA_KEEP_ALIVE


@pytest.mark.parametrize(
    ("value", "expected_ns"),
    [
        ("", 5 * MIN_NS),
        ("10m", 10 * MIN_NS),
        ("1h", 60 * MIN_NS),
        ("3600", 60 * MIN_NS),
        ("0", 0),
        ("-1", FOREVER_NS),
        ("-1s", FOREVER_NS),
        ('"10m"', 10 * MIN_NS),
    ],
)
def test_keep_alive(run_dir: str, value: str, expected_ns: int) -> None:
    assert settings(run_dir, OLLAMA_KEEP_ALIVE=value).keep_alive_ns == expected_ns


def test_keep_alive_defaults_to_five_minutes(run_dir: str) -> None:
    assert settings(run_dir).keep_alive_ns == 5 * MIN_NS


def test_unparsable_keep_alive_falls_back_to_five_minutes(run_dir: str) -> None:
    assert settings(run_dir, OLLAMA_KEEP_ALIVE="abc").keep_alive_ns == 5 * MIN_NS


# Integers


def test_num_parallel_max_queue_and_max_loaded_models(run_dir: str) -> None:
    s = settings(run_dir, OLLAMA_NUM_PARALLEL="8", OLLAMA_MAX_QUEUE="16",
                 OLLAMA_MAX_LOADED_MODELS="2")
    assert (s.num_parallel, s.max_queue, s.max_loaded_models) == (8, 16, 2)


def test_integers_are_trimmed_of_space_and_quotes(run_dir: str) -> None:
    s = settings(run_dir, OLLAMA_NUM_PARALLEL=' "8" ', OLLAMA_MAX_QUEUE="'16'")
    assert (s.num_parallel, s.max_queue) == (8, 16)


def test_max_queue_defaults_to_512(run_dir: str) -> None:
    assert settings(run_dir).max_queue == 512


@pytest.mark.parametrize("value", ["", "0"])
def test_zero_max_loaded_models_means_three_on_cpu(run_dir: str, value: str) -> None:
    assert settings(run_dir, OLLAMA_MAX_LOADED_MODELS=value).max_loaded_models == 3


def test_num_parallel_is_at_least_one(run_dir: str) -> None:
    assert settings(run_dir, OLLAMA_NUM_PARALLEL="0").num_parallel == 1


@pytest.mark.parametrize("bad", ["abc", "1.5", "4x", "eight"])
@pytest.mark.parametrize(
    ("var", "field"),
    [
        ("OLLAMA_NUM_PARALLEL", "num_parallel"),
        ("OLLAMA_MAX_QUEUE", "max_queue"),
        ("OLLAMA_MAX_LOADED_MODELS", "max_loaded_models"),
        ("OLLAMA_GPU_OVERHEAD", "gpu_overhead"),
    ],
)
def test_invalid_integers_fall_back_to_defaults(run_dir: str, var: str, field: str, bad: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    default = getattr(settings(run_dir), field)
    assert getattr(settings(run_dir, **{var: bad}), field) == default
    assert var in caplog.text  # with a warning, as Ollama gives


def test_gpu_overhead_is_bytes_per_gpu(run_dir: str) -> None:
    assert settings(run_dir).gpu_overhead == 0
    assert settings(run_dir, OLLAMA_GPU_OVERHEAD="536870912").gpu_overhead == 512 * 2**20
    assert settings(run_dir, OLLAMA_GPU_OVERHEAD="-5").gpu_overhead == 0


# Herd's own settings


def test_herd_workers_is_a_comma_list(run_dir: str) -> None:
    s = settings(run_dir, HERD_WORKERS=" tcp://a:5555, tcp://b:5555 ,,")
    assert s.workers == ("tcp://a:5555", "tcp://b:5555")


def test_no_herd_workers_means_a_local_node(run_dir: str) -> None:
    assert settings(run_dir).workers == ()


def test_run_dir_comes_from_herd_run_dir(run_dir: str) -> None:
    assert settings(run_dir).run_dir == run_dir


def test_settings_never_read_the_process_environment(
    run_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "7")
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:1")
    s = settings(run_dir)
    assert s.num_parallel != 7
    assert (s.host, s.port) == ("127.0.0.1", 11434)


@pytest.mark.parametrize("value, expected", [
    ("", "f16"), ("q8_0", "q8_0"), ("Q4_0", "q4_0"), ("'q8_0'", "q8_0"), ("q5_1", "f16")])
def test_kv_cache_type(run_dir: str, value: str, expected: str) -> None:
    env = {"HERD_RUN_DIR": run_dir, "OLLAMA_KV_CACHE_TYPE": value}
    assert settings_from_env(env).kv_cache_type == expected


@pytest.mark.parametrize("value, expected", [
    ("", "auto"), ("1", "on"), ("true", "on"), ("0", "off"), ("false", "off"), ("maybe", "auto")])
def test_flash_attention(run_dir: str, value: str, expected: str) -> None:
    env = {"HERD_RUN_DIR": run_dir, "OLLAMA_FLASH_ATTENTION": value}
    assert settings_from_env(env).flash_attention == expected


@pytest.mark.parametrize("value, expected", [
    ("", 300.0), ("10m", 600.0), ("90", 90.0), ("1h30m", 5400.0), ("0", float("inf")),
    ("-1", float("inf")), ("soon", 300.0)])
def test_load_timeout(run_dir: str, value: str, expected: float) -> None:
    env = {"HERD_RUN_DIR": run_dir, "OLLAMA_LOAD_TIMEOUT": value}
    assert settings_from_env(env).load_timeout_s == expected


@pytest.mark.parametrize("env, level, llama_verbose", [
    ({}, "INFO", None), ({"OLLAMA_DEBUG": "1"}, "DEBUG", None),
    ({"OLLAMA_DEBUG": "2"}, "DEBUG", "1"), ({"OLLAMA_DEBUG": "0"}, "INFO", None),
    ({"HERD_LOG_LEVEL": "warning", "OLLAMA_DEBUG": "1"}, "WARNING", None),
    ({"HERD_LOG_LEVEL": "loud"}, "INFO", None)])
def test_log_level(env: dict, level: str, llama_verbose: str | None) -> None:
    from herd.protocol.config import log_level

    env = dict(env)
    assert log_level(env) == level
    assert env.get("HERD_LLAMA_VERBOSE") == llama_verbose


# Cluster settings (HERD_CURVE_*, drain, leases, bounds, discovery)


def test_cluster_settings_defaults(run_dir: str) -> None:
    s = settings(run_dir)
    assert (s.curve_secret_key, s.curve_authorized, s.curve_server_key) == ("", "", "")
    assert (s.drain_timeout_s, s.lease_timeout_s, s.discovery_interval_s) == (30.0, 15.0, 10.0)
    assert s.max_runners_per_peer == 8 and s.max_message_bytes == 64 * 1024 * 1024


def test_cluster_settings_from_env(run_dir: str, tmp_path: pathlib.Path) -> None:
    s = settings(run_dir, HERD_CURVE_SECRET_KEY="keys/w.key", HERD_CURVE_AUTHORIZED=str(tmp_path),
                 HERD_DRAIN_TIMEOUT="1m", HERD_LEASE_TIMEOUT="2", HERD_DISCOVERY_INTERVAL="500ms",
                 HERD_MAX_RUNNERS_PER_PEER="2", HERD_MAX_MESSAGE_BYTES="1")
    assert s.curve_secret_key == os.path.abspath("keys/w.key")
    assert s.curve_authorized == str(tmp_path)
    assert (s.drain_timeout_s, s.lease_timeout_s, s.discovery_interval_s) == (60.0, 2.0, 0.5)
    assert s.max_runners_per_peer == 2
    assert s.max_message_bytes == 1024 * 1024  # never below what a request needs
    assert settings(run_dir, HERD_DRAIN_TIMEOUT="soon").drain_timeout_s == 30.0
