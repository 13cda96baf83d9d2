"""The deploy files agree with each other, checked without Docker.

docker-compose.yml, deploy/Dockerfile, deploy/prometheus.yml, the alert rules
and the Grafana provisioning name each other in many places (service names,
ports, mounted paths, job names, datasource uids, metric names). Nothing
complains about a mismatch until `docker compose up` on someone's laptop, and
there is no Docker engine in CI, so these tests read the files and check the
cross-references themselves. With `promtool` on PATH (Debian: `apt-get install
prometheus`) they also validate the Prometheus config and rules, and run the
rules' unit tests (deploy/prometheus/tests/).
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

from streams.metrics_catalogue import exported_series

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
PROMETHEUS_FILE = REPO / "deploy" / "prometheus.yml"
RULES_FILE = REPO / "deploy" / "prometheus" / "rules" / "lepton.yml"
RULE_TESTS = sorted((REPO / "deploy" / "prometheus" / "tests").glob("*.yml"))
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "lepton.json"

WORKER = "worker"
ALERTS = {"WorkerDown", "ConsumerLagHigh", "PartitionStalled", "DeadLetterRateHigh", "ModelLoadFailure", "DriftDetected"}
# What a worker exports, read from its metrics registry, plus Prometheus's own
# per-target `up`. A rule or panel on any other name would stay empty.
EXPORTED_METRICS = exported_series() | {"up"}
# Words of PromQL that look like metric names but are not.
PROMQL_WORDS = {
    "sum", "avg", "max", "min", "count", "rate", "irate", "increase", "histogram_quantile", "by", "without",
    "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool", "absent",
    "label_values", "topk", "bottomk", "clamp_min", "clamp_max", "delta", "deriv", "vector", "time",
}


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside label matchers,
    grouping clauses, strings and ranges, that are not functions or keywords.

    >>> sorted(promql_metrics('sum by (pipeline, le) (rate(lepton_x_bucket{a="b"}[1m])) / up'))
    ['lepton_x_bucket', 'up']
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", text))
    return {n for n in names if n not in PROMQL_WORDS and not n.startswith("$")}


def test_promql_metrics_finds_metric_names_only():
    expr = (
        'histogram_quantile(0.99, sum by (pipeline, le) (rate(lepton_x_bucket{a="b", c=~"$v"}[$__rate_interval])))'
        ' / on (pipeline) group_left max without (instance) (up{job="w"} offset 10m) > 0 and lepton_y_total == 1'
    )
    assert promql_metrics(expr) == {"lepton_x_bucket", "up", "lepton_y_total"}


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


def worker_pipelines(services) -> list[str]:
    return json.loads(env_of(services[WORKER])["LEPTON_PIPELINES"])


def test_workers_run_all_three_pipelines(services):
    from streams.app import PIPELINE_FACTORIES

    assert sorted(worker_pipelines(services)) == sorted(PIPELINE_FACTORIES)


def test_workers_start_after_kafka_is_healthy_and_training_succeeded(services):
    deps = depends_on(services[WORKER])
    kafka_name, _ = kafka_service(services)
    assert deps.get(kafka_name) == "service_healthy"
    for pipeline in worker_pipelines(services):
        trainers = [n for n, s in services.items() if command_of(s)[:2] == ["train", pipeline]]
        assert trainers, f"a one-shot service running `lepton train {pipeline}`"
        for trainer in trainers:
            assert deps.get(trainer) == "service_completed_successfully", f"the worker does not wait for {trainer}"
            assert services[trainer].get("restart") == "no", f"{trainer} is one-shot"


def test_a_generator_per_pipeline_with_labels(services):
    from streams.cli import main

    produce = main.commands["produce"]
    for pipeline in worker_pipelines(services):
        generators = [s for s in services.values() if command_of(s)[:2] == ["produce", pipeline]]
        assert len(generators) == 1, f"one service running `lepton produce {pipeline}`"
        args = command_of(generators[0])
        # The command line must parse as the CLI defines it (no typo in an option).
        ctx = produce.make_context("produce", args[1:], resilient_parsing=False)
        assert ctx.params["source"] == "synthetic" and ctx.params["rate"], f"{args}: synthetic, at a fixed rate"
        assert "container_name" not in generators[0]


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
        used = promql_metrics(rule["expr"])
        assert used, f"{rule.get('alert')}: no metric found in {rule['expr']!r}"
        unknown = used - EXPORTED_METRICS
        assert not unknown, f"{rule.get('alert')} uses metrics no worker exports: {sorted(unknown)}"


def test_worker_down_watches_the_worker_scrape_job(rules, prometheus_config):
    job_name = worker_scrape_jobs(prometheus_config)[0]["job_name"]
    (expr,) = [r["expr"] for r in rules if r.get("alert") == "WorkerDown"]
    jobs = set(re.findall(r'job\s*=\s*"([^"]+)"', expr))
    assert jobs == {job_name}, f"WorkerDown selects job {jobs}, the worker scrape job is {job_name!r}"


# --- Grafana -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grafana(services) -> dict:
    _, svc = service_by_image(services, "grafana/grafana")
    return svc


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text())


def provisioning(grafana, kind: str) -> list[dict]:
    """The provisioning files of one kind (datasources, dashboards) Grafana loads, through its mounts."""
    directory = host_path(grafana, f"/etc/grafana/provisioning/{kind}")
    assert directory is not None and directory.is_dir(), f"/etc/grafana/provisioning/{kind} is not mounted from the repo"
    docs = [yaml.safe_load(p.read_text()) for p in sorted(directory.glob("*.y*ml"))]
    assert docs, f"no {kind} provisioning file in {directory}"
    return docs


def panels(dashboard) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return [p for p in out if p.get("type") != "row"]


def dashboard_queries(dashboard) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable."""
    queries = [(p["title"], t["expr"]) for p in panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            queries.append((f"${var['name']}", re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query)))
    return queries


def test_grafana_datasource_is_the_compose_prometheus(grafana, services):
    (doc,) = provisioning(grafana, "datasources")
    (source,) = doc["datasources"]
    assert source["type"] == "prometheus"
    prom_name, prom = service_by_image(services, "prom/prometheus")
    url = re.match(r"http://([^:/]+):(\d+)", source["url"])
    assert url, source["url"]
    assert url.group(1) == prom_name, f"the datasource points at {url.group(1)}, Prometheus is the {prom_name!r} service"
    listen = "0.0.0.0:9090"  # the image's default, unless its command says otherwise
    for arg in prom.get("command") or []:
        if str(arg).startswith("--web.listen-address="):
            listen = str(arg).split("=", 1)[1]
    assert url.group(2) == listen.rsplit(":", 1)[1], f"Prometheus listens on {listen}, the datasource uses port {url.group(2)}"
    assert prom_name in depends_on(grafana)


def test_grafana_loads_the_dashboard_from_a_mounted_folder(grafana):
    (doc,) = provisioning(grafana, "dashboards")
    (provider,) = doc["providers"]
    folder = host_path(grafana, provider["options"]["path"])
    assert folder is not None, f"{provider['options']['path']} is not mounted into the Grafana container"
    assert DASHBOARD_FILE.resolve() in {p.resolve() for p in folder.glob("*.json")}
    home = env_of(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert host_path(grafana, home) == DASHBOARD_FILE.resolve(), f"the home dashboard {home} is not lepton.json"


def test_every_panel_uses_the_provisioned_datasource(grafana, dashboard):
    (doc,) = provisioning(grafana, "datasources")
    uids = {s["uid"] for s in doc["datasources"]}
    for panel in panels(dashboard):
        for target in [panel, *panel.get("targets", [])]:
            ds = target.get("datasource")
            if ds is not None:
                assert ds.get("uid") in uids, f"panel {panel['title']!r}: datasource {ds} is not provisioned ({uids})"


def test_dashboard_queries_only_metrics_a_worker_exports(dashboard):
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 20
    for where, expr in queries:
        used = promql_metrics(expr)
        assert used, f"{where}: no metric in {expr!r}"
        unknown = used - EXPORTED_METRICS
        assert not unknown, f"{where} queries {sorted(unknown)}, which no worker exports"


def test_dashboard_has_the_agreed_panels(dashboard):
    # The panel list, by the metric each needs.
    used = {m for _, expr in dashboard_queries(dashboard) for m in promql_metrics(expr)}
    needed = {
        "throughput": "lepton_events_consumed_total",
        "latency percentiles": "lepton_end_to_end_latency_seconds_bucket",
        "lag in seconds": "lepton_consumer_lag_seconds",
        "dead letters": "lepton_dead_letters_total",
        "alerts by pipeline": "lepton_alerts_total",
        "score distributions": "lepton_score_bucket",
        "prequential quality": "lepton_prequential_quality",
        "drift events": "lepton_drift_events_total",
        "model versions": "lepton_model_version_info",
        "shadow agreement": "lepton_model_agreement_ratio",
    }
    missing = {panel: metric for panel, metric in needed.items() if metric not in used}
    assert not missing, f"panels missing: {missing}"


def test_dashboard_panels_do_not_overlap(dashboard):
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']!r} is wider than the grid"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


def test_dashboard_ids_are_unique(dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"]


def test_dashboard_panels_are_built_in_types_with_distinct_queries(dashboard):
    # Built-in panel types only: a plugin type would need installing in the Grafana image.
    for panel in panels(dashboard):
        assert panel["type"] in {"timeseries", "heatmap", "table", "stat", "gauge", "bargauge"}, panel["type"]
        ref_ids = [t["refId"] for t in panel.get("targets", [])]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), f"{panel['title']!r}: refIds {ref_ids}"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for where, expr in dashboard_queries(dashboard):
        for used in re.findall(r"\$(\w+)", expr):
            assert used in variables or used.startswith("__"), f"{where}: ${used} is not a dashboard variable"


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


def rule_test_files() -> list[dict]:
    return [yaml.safe_load(path.read_text()) for path in RULE_TESTS]


def test_every_alert_has_a_rule_test_that_fires_it(rules):
    assert RULE_TESTS, "no promtool rule tests in deploy/prometheus/tests/"
    fired = {
        case["alertname"]
        for doc in rule_test_files()
        for test in doc["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert alerts <= fired, f"alerts no rule test expects to fire: {sorted(alerts - fired)}"


def test_rule_tests_load_the_deployed_rules():
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        loaded = {(path.parent / f).resolve() for f in doc["rule_files"]}
        assert loaded == {RULES_FILE.resolve()}, f"{path.name} tests {sorted(map(str, loaded))}"


@needs_promtool
@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_test_rules(path):
    result = promtool("test", "rules", path.name, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
