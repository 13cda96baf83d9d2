"""The deploy files agree with each other, checked without Docker.

docker-compose.yml, deploy/Dockerfile, deploy/prometheus.yml and the alert rules
name each other in many places (service names, ports, mounted paths, job
names). Nothing complains about a mismatch until `docker compose up` on
someone's laptop, and there is no Docker engine in CI, so these tests read the
files and check the cross-references themselves. With `promtool` on PATH
(Debian: `apt-get install prometheus`) they also validate the Prometheus config
and rules, and run the alert rules against made-up series.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
PROMETHEUS_FILE = REPO / "deploy" / "prometheus.yml"
RULES_FILE = REPO / "deploy" / "prometheus" / "rules" / "lepton.yml"

WORKER = "worker"
ALERTS = {"WorkerDown", "ConsumerLagHigh", "PartitionStalled", "DeadLetterRateHigh", "ModelLoadFailure"}
# The metric names the workers export (fixed in the spec / by the metrics
# module). A rule on any other name would never fire: catch typos here.
EXPORTED_METRICS = {
    "lepton_events_consumed_total",
    "lepton_events_processed_total",
    "lepton_events_failed_total",
    "lepton_dead_letters_total",
    "lepton_consumer_lag_messages",
    "lepton_consumer_lag_seconds",
    "lepton_model_load_failures_total",
    "lepton_partition_last_commit_age_seconds",
}


# --- loading -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def prometheus_config() -> dict:
    return yaml.safe_load(PROMETHEUS_FILE.read_text())


@pytest.fixture(scope="module")
def rules() -> list[dict]:
    doc = yaml.safe_load(RULES_FILE.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with `\\` continuations joined and comments dropped.

    Docker drops comment lines even in the middle of a continued instruction,
    so they are removed before joining.
    """
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line:
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def instructions(dockerfile, name: str) -> list[str]:
    return [args for word, args in dockerfile if word == name]


def command_of(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def env_of(service: dict) -> dict[str, str]:
    """A service's environment as a dict of strings (compose allows a map or a KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def depends_on(service: dict) -> dict[str, str]:
    """{dependency: condition}; the short list form means service_started."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, container target) for each volume entry, short or long syntax."""
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            out.append((str(vol.get("source", "")), str(vol["target"])))
        else:
            parts = str(vol).split(":")
            if len(parts) == 1:  # anonymous volume: container path only
                out.append(("", parts[0]))
            else:
                out.append((parts[0], parts[1]))
    return out


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def host_path(service: dict, container_path: str) -> Path | None:
    """Where a container path of `service` comes from in the repo, through its bind mounts."""
    target_path = PurePosixPath(container_path)
    for source, target in mounts(service):
        if not is_bind(source):
            continue
        if target_path == PurePosixPath(target) or PurePosixPath(target) in target_path.parents:
            rel = target_path.relative_to(target)
            return (REPO / source / rel).resolve()
    return None


def service_by_image(services, prefix: str) -> tuple[str, dict]:
    found = [(n, s) for n, s in services.items() if str(s.get("image", "")).startswith(prefix)]
    assert len(found) == 1, f"expected one service with image {prefix}*, found {[n for n, _ in found]}"
    return found[0]


def kafka_service(services) -> tuple[str, dict]:
    found = [(n, s) for n, s in services.items() if "KAFKA_ADVERTISED_LISTENERS" in env_of(s)]
    assert len(found) == 1, f"expected one Kafka broker service, found {[n for n, _ in found]}"
    return found[0]


def metrics_port(services) -> int:
    env = env_of(services[WORKER])
    assert "LEPTON_METRICS_PORT" in env, "the worker must set LEPTON_METRICS_PORT: Prometheus scrapes that port"
    return int(env["LEPTON_METRICS_PORT"])


def worker_scrape_jobs(prometheus_config) -> list[dict]:
    jobs = []
    for job in prometheus_config.get("scrape_configs", []):
        names = [n for sd in job.get("dns_sd_configs", []) for n in sd.get("names", [])]
        targets = [t for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
        if WORKER in names or any(t.split(":")[0] == WORKER for t in targets):
            jobs.append(job)
    return jobs


# --- docker-compose.yml ----------------------------------------------------------


def test_every_service_has_image_or_build(services):
    missing = [name for name, svc in services.items() if "image" not in svc and "build" not in svc]
    assert not missing, f"services with neither image nor build: {missing}"


def test_build_contexts_and_dockerfiles_exist(services):
    for name, svc in services.items():
        build = svc.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (REPO / build.get("context", ".")).resolve()
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: dockerfile {dockerfile} does not exist"


def test_depends_on_names_exist(services):
    for name, svc in services.items():
        for dep in depends_on(svc):
            assert dep in services, f"{name} depends on unknown service {dep!r}"


def test_service_healthy_dependencies_have_a_healthcheck(services):
    # `condition: service_healthy` on a service without a healthcheck never
    # becomes true: `docker compose up` fails on the dependent instead.
    image_has_healthcheck = bool(instructions(parse_dockerfile(DOCKERFILE.read_text()), "HEALTHCHECK"))
    for name, svc in services.items():
        for dep, condition in depends_on(svc).items():
            if condition != "service_healthy":
                continue
            check = services[dep].get("healthcheck")
            if check is not None:
                assert not check.get("disable"), f"{name} waits for {dep} to be healthy, but its healthcheck is disabled"
            else:
                builds_ours = "build" in services[dep]
                assert builds_ours and image_has_healthcheck, f"{name} waits for {dep} to be healthy, but it has no healthcheck"


def test_workers_start_after_kafka_is_healthy_and_training_succeeded(services):
    deps = depends_on(services[WORKER])
    kafka_name, _ = kafka_service(services)
    assert deps.get(kafka_name) == "service_healthy"
    trainers = [n for n, s in services.items() if command_of(s)[:2] == ["train", "fraud"]]
    assert trainers, "a one-shot service running `lepton train fraud`"
    for trainer in trainers:
        assert deps.get(trainer) == "service_completed_successfully"


def test_worker_bootstrap_is_the_brokers_advertised_listener(services):
    # Clients bootstrap, then connect to whatever address the broker advertises:
    # the bootstrap address must be that advertised listener, with a host that
    # is the Kafka service on the compose network.
    kafka_name, kafka = kafka_service(services)
    kenv = env_of(kafka)
    advertised = {}
    for listener in kenv["KAFKA_ADVERTISED_LISTENERS"].split(","):
        listener_name, _, address = listener.strip().partition("://")
        advertised[address] = listener_name
    listener_ports = {int(l.rsplit(":", 1)[1]) for l in kenv["KAFKA_LISTENERS"].split(",")}
    kafka_hosts = {kafka_name, kafka.get("hostname", kafka_name)}

    users = {n: env_of(s)["LEPTON_KAFKA_BOOTSTRAP"] for n, s in services.items() if "LEPTON_KAFKA_BOOTSTRAP" in env_of(s)}
    assert WORKER in users, "the worker must set LEPTON_KAFKA_BOOTSTRAP (unset starts the embedded broker)"
    for name, bootstrap in users.items():
        for address in bootstrap.split(","):
            host, port = address.strip().rsplit(":", 1)
            assert address.strip() in advertised, f"{name}: {address} is not an advertised listener {sorted(advertised)}"
            assert advertised[address.strip()] != kenv.get("KAFKA_CONTROLLER_LISTENER_NAMES"), f"{name}: {address} is the controller listener"
            assert host in kafka_hosts, f"{name}: {host} is not the Kafka service ({sorted(kafka_hosts)})"
            assert int(port) in listener_ports, f"{name}: nothing listens on port {port}"


def test_worker_can_scale(services):
    worker = services[WORKER]
    # Both must be unique per container, so either one breaks --scale worker=N.
    assert "container_name" not in worker, "container_name prevents `--scale worker=N`"
    fixed = [p for p in worker.get("ports") or [] if (isinstance(p, dict) and p.get("published")) or ":" in str(p)]
    assert not fixed, f"the worker binds host ports {fixed}: a second replica could not start"


def test_topic_partitions_match_broker_default(services):
    # Topics get LEPTON_PARTITIONS when the worker creates them and the broker
    # default when the generator auto-creates them first: both must agree.
    _, kafka = kafka_service(services)
    broker_default = env_of(kafka).get("KAFKA_NUM_PARTITIONS")
    for name, svc in services.items():
        lepton_partitions = env_of(svc).get("LEPTON_PARTITIONS")
        if lepton_partitions is not None:
            assert broker_default == lepton_partitions, f"{name}: LEPTON_PARTITIONS {lepton_partitions} != KAFKA_NUM_PARTITIONS {broker_default}"


def test_volume_sources_exist(compose, services):
    named = set((compose.get("volumes") or {}).keys())
    for name, svc in services.items():
        for source, target in mounts(svc):
            if not source:
                continue
            if is_bind(source):
                assert (REPO / source).exists(), f"{name}: mounts {source} -> {target}, which is not in the repo"
            else:
                assert source in named, f"{name}: named volume {source!r} is not declared under top-level volumes"


def test_trainer_and_workers_share_the_models_directory(services):
    # The trainer writes models where the workers read them: the same named
    # volume, on LEPTON_HOME/models in both.
    worker = services[WORKER]
    home = env_of(worker).get("LEPTON_HOME")
    assert home, "the worker must set LEPTON_HOME (the default is relative to the working directory)"
    models_dir = str(PurePosixPath(home) / "models")
    worker_models = {s for s, t in mounts(worker) if t == models_dir and not is_bind(s)}
    assert worker_models, f"the worker mounts no named volume on {models_dir}"
    for name, svc in services.items():
        if command_of(svc)[:1] == ["train"]:
            assert env_of(svc).get("LEPTON_HOME") == home
            assert worker_models & {s for s, t in mounts(svc) if t == models_dir}, f"{name} does not write to the workers' models volume"


# --- Prometheus --------------------------------------------------------------------


def test_prometheus_scrapes_the_worker_service_on_the_metrics_port(services, prometheus_config):
    jobs = worker_scrape_jobs(prometheus_config)
    assert len(jobs) == 1, "exactly one scrape job for the worker service"
    sds = jobs[0].get("dns_sd_configs", [])
    # DNS A records: one per replica, so scaled workers are each scraped.
    assert sds, "scrape the workers through dns_sd_configs, so `--scale worker=N` is followed"
    for sd in sds:
        assert sd.get("type", "SRV") == "A"
        assert sd["names"] == [WORKER]
        assert int(sd["port"]) == metrics_port(services)
    assert jobs[0].get("metrics_path", "/metrics") == "/metrics"


def test_prometheus_config_and_rules_are_mounted(services, prometheus_config):
    _, prom = service_by_image(services, "prom/prometheus")
    # The image reads /etc/prometheus/prometheus.yml unless the command says otherwise.
    config_path = "/etc/prometheus/prometheus.yml"
    for arg in prom.get("command") or []:
        if str(arg).startswith("--config.file="):
            config_path = str(arg).split("=", 1)[1]
    assert host_path(prom, config_path) == PROMETHEUS_FILE.resolve()

    rule_globs = prometheus_config.get("rule_files") or []
    assert rule_globs, "prometheus.yml loads no rule files"
    matched: set[Path] = set()
    for pattern in rule_globs:
        directory, _, file_glob = pattern.rpartition("/")
        host_dir = host_path(prom, directory)
        assert host_dir is not None, f"rule_files {pattern}: {directory} is not mounted into the Prometheus container"
        assert host_dir.is_dir(), f"rule_files {pattern}: {host_dir} does not exist"
        hits = {p.resolve() for p in host_dir.iterdir() if fnmatch.fnmatch(p.name, file_glob)}
        assert hits, f"rule_files {pattern} matches no file in {host_dir}"
        matched |= hits
    assert RULES_FILE.resolve() in matched


def test_scrape_interval_is_5s(prometheus_config):
    assert prometheus_config["global"]["scrape_interval"] == "5s"


def test_alert_rules_are_the_agreed_set(rules):
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert ALERTS <= alerts, f"missing alerts: {sorted(ALERTS - alerts)}"
    for rule in rules:
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, f"{rule.get('alert')}: severity"
        assert rule.get("annotations", {}).get("summary"), f"{rule.get('alert')}: no summary"


def test_alert_rules_use_exported_metrics_only(rules):
    for rule in rules:
        used = set(re.findall(r"\blepton_[a-z0-9_]+", rule["expr"]))
        unknown = used - EXPORTED_METRICS
        assert not unknown, f"{rule.get('alert')} uses metrics no worker exports: {sorted(unknown)}"


def test_worker_down_watches_the_worker_scrape_job(rules, prometheus_config):
    job_name = worker_scrape_jobs(prometheus_config)[0]["job_name"]
    (expr,) = [r["expr"] for r in rules if r.get("alert") == "WorkerDown"]
    jobs = set(re.findall(r'job\s*=\s*"([^"]+)"', expr))
    assert jobs == {job_name}, f"WorkerDown selects job {jobs}, the worker scrape job is {job_name!r}"


# --- Dockerfile ----------------------------------------------------------------------


def test_dockerfile_base_image(dockerfile):
    assert instructions(dockerfile, "FROM")[-1].split()[0] == "python:3.11-slim"


def test_dockerfile_exposes_the_metrics_port(dockerfile, services):
    exposed = {int(p.split("/")[0]) for args in instructions(dockerfile, "EXPOSE") for p in args.split()}
    assert metrics_port(services) in exposed


def test_dockerfile_entrypoint_is_lepton_and_runs_a_worker(dockerfile):
    # Exec form, so `lepton` gets SIGTERM itself (a shell would swallow it) and
    # compose can pass a sub-command (`train fraud`, `produce ...`) as the command.
    (entrypoint,) = instructions(dockerfile, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["lepton"]
    assert json.loads(instructions(dockerfile, "CMD")[-1]) == ["worker"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "lepton" in scripts, "ENTRYPOINT runs `lepton`, which pyproject must install as a console script"


def test_dockerfile_runs_as_non_root(dockerfile):
    users = instructions(dockerfile, "USER")
    assert users and users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_healthcheck_hits_healthz(dockerfile):
    (check,) = instructions(dockerfile, "HEALTHCHECK")
    assert "/healthz" in check


def test_dockerfile_torch_matches_pyproject_pin_from_cpu_index(dockerfile):
    # pyproject's torch pin resolved from PyPI means CUDA wheels; the image
    # installs the same version from the CPU index first, so the pins must match.
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d.replace(" ", "") for d in deps if re.match(r"torch\s*==", d)]
    torch_runs = [args for args in instructions(dockerfile, "RUN") if re.search(r"\btorch==", args)]
    assert torch_runs, "the Dockerfile installs torch explicitly"
    for run in torch_runs:
        assert pin in run.split(), f"Dockerfile installs {run!r}, pyproject pins {pin}"
        assert "--index-url https://download.pytorch.org/whl/cpu" in run


def test_dockerfile_copies_only_what_exists(dockerfile):
    # A COPY of a missing path fails the build; globs may match nothing.
    for args in instructions(dockerfile, "COPY"):
        parts = [p for p in args.split() if not p.startswith("--")]
        for source in parts[:-1]:
            if any(c in source for c in "*?["):
                continue
            assert (REPO / source).exists(), f"COPY {source}: not in the build context"


def test_dockerfile_installs_the_project(dockerfile):
    assert any(re.search(r"pip install (\S+ )*\.(\s|$)", args) for args in instructions(dockerfile, "RUN"))


# --- promtool ------------------------------------------------------------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH (Debian: apt-get install prometheus); Prometheus files only checked structurally"
)


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@needs_promtool
def test_promtool_check_rules():
    result = promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_check_config_with_the_mounted_rules(tmp_path, services, prometheus_config):
    # rule_files holds container paths; map them through the compose mounts so
    # promtool checks the config and the rules it would really load.
    _, prom = service_by_image(services, "prom/prometheus")
    config = dict(prometheus_config)
    config["rule_files"] = [
        str(host_path(prom, p.rpartition("/")[0]) / p.rpartition("/")[2]) for p in prometheus_config["rule_files"]
    ]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


# Each scenario: input series (promtool notation, one sample per 15s) and the
# firing alerts expected at eval_time, as {alertname: [label sets]}. An empty
# dict means "nothing fires", which is what the quiet cases check.
W1 = {"job": "lepton-worker", "instance": "172.18.0.5:9308"}
W2 = {"job": "lepton-worker", "instance": "172.18.0.6:9308"}
TP0 = {"topic": "transactions", "partition": "0"}


def series(name: str, labels: dict, values: str) -> dict:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


RULE_SCENARIOS = {
    "worker answers": ([series("up", W1, "1x40")], "5m", {}),
    "worker scrape fails": ([series("up", W1, "1x4 0x40")], "5m", {"WorkerDown": [{**W1, "severity": "critical"}]}),
    "no worker target at all": (
        [series("up", {"job": "prometheus", "instance": "localhost:9090"}, "1x40")],
        "5m",
        {"WorkerDown": [{"job": "lepton-worker", "severity": "critical"}]},
    ),
    "lag 10s": ([series("lepton_consumer_lag_seconds", {**W1, "topic": "transactions"}, "10x40")], "5m", {}),
    "lag 45s on one worker": (
        [
            series("lepton_consumer_lag_seconds", {**W1, "topic": "transactions"}, "45x40"),
            series("lepton_consumer_lag_seconds", {**W2, "topic": "transactions"}, "1x40"),
        ],
        "5m",
        {"ConsumerLagHigh": [{"topic": "transactions", "severity": "warning"}]},
    ),
    "commits stop with lag": (
        [
            series("lepton_partition_last_commit_age_seconds", {**W1, **TP0}, "0+15x40"),
            series("lepton_consumer_lag_messages", {**W1, **TP0}, "500x40"),
        ],
        "5m",
        {"PartitionStalled": [{**TP0, "severity": "critical"}]},
    ),
    "idle partition, old commit, no lag": (
        [
            series("lepton_partition_last_commit_age_seconds", {**W1, **TP0}, "0+15x40"),
            series("lepton_consumer_lag_messages", {**W1, **TP0}, "0x40"),
        ],
        "5m",
        {},
    ),
    "rebalanced: old owner's stale age, new owner commits": (
        [
            series("lepton_partition_last_commit_age_seconds", {**W1, **TP0}, "0+15x40"),
            series("lepton_partition_last_commit_age_seconds", {**W2, **TP0}, "1x40"),
            series("lepton_consumer_lag_messages", {**W2, **TP0}, "500x40"),
        ],
        "5m",
        {},
    ),
    "10% dead letters at 100 events/s": (
        [
            series("lepton_events_consumed_total", {**W1, "pipeline": "fraud"}, "0+1500x60"),
            series("lepton_dead_letters_total", {**W1, "pipeline": "fraud", "reason": "invalid_json"}, "0+150x60"),
        ],
        "12m",
        {"DeadLetterRateHigh": [{"pipeline": "fraud", "severity": "warning"}]},
    ),
    "1% dead letters": (
        [
            series("lepton_events_consumed_total", {**W1, "pipeline": "fraud"}, "0+1500x60"),
            series("lepton_dead_letters_total", {**W1, "pipeline": "fraud", "reason": "invalid_json"}, "0+15x60"),
        ],
        "12m",
        {},
    ),
    "a few dead letters at a trickle": (
        [
            series("lepton_events_consumed_total", {**W1, "pipeline": "fraud"}, "0+15x60"),
            series("lepton_dead_letters_total", {**W1, "pipeline": "fraud", "reason": "invalid_json"}, "0+1x60"),
        ],
        "12m",
        {},
    ),
    "no model load failures": ([series("lepton_model_load_failures_total", {**W1, "pipeline": "fraud"}, "0x40")], "5m", {}),
    "a model load fails": (
        [series("lepton_model_load_failures_total", {**W1, "pipeline": "fraud"}, "0x10 1x30")],
        "5m",
        {"ModelLoadFailure": [{**W1, "pipeline": "fraud", "severity": "critical"}]},
    ),
    "first load failed before the first scrape": (
        [series("lepton_model_load_failures_total", {**W1, "pipeline": "fraud"}, "_x3 1x40")],
        "5m",
        {"ModelLoadFailure": [{**W1, "pipeline": "fraud", "severity": "critical"}]},
    ),
    "an old failure, long ago": (
        [series("lepton_model_load_failures_total", {**W1, "pipeline": "fraud"}, "1x120")],
        "25m",
        {},
    ),
}


@needs_promtool
@pytest.mark.parametrize("scenario", list(RULE_SCENARIOS))
def test_alert_rules_fire_as_intended(scenario, tmp_path, prometheus_config):
    input_series, eval_time, expected = RULE_SCENARIOS[scenario]
    exp_samples = [
        {"labels": "ALERTS{" + ", ".join(f'{k}="{v}"' for k, v in {"alertname": alert, "alertstate": "firing", **labels}.items()) + "}", "value": 1}
        for alert, label_sets in expected.items()
        for labels in label_sets
    ]
    # Only the up series of the absent() scenario come from another job: every
    # other scenario also has a healthy worker target, so WorkerDown stays out of it.
    if not any(s["series"].startswith("up{") for s in input_series):
        input_series = [*input_series, series("up", W1, "1x200")]
    test_file = {
        "rule_files": [str(RULES_FILE)],
        "evaluation_interval": prometheus_config["global"]["evaluation_interval"],
        "tests": [
            {
                "name": scenario,
                "interval": "15s",
                "input_series": input_series,
                "promql_expr_test": [{"expr": 'ALERTS{alertstate="firing"}', "eval_time": eval_time, "exp_samples": exp_samples}],
            }
        ],
    }
    path = tmp_path / "lepton_test.yml"
    path.write_text(yaml.safe_dump(test_file, sort_keys=False))
    result = promtool("test", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
