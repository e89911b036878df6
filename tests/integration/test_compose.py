"""docker-compose.yml, the Dockerfile and deploy/ agree with the code.

No Docker engine is needed: the files are parsed and compared with the settings, the CLI, the
topic contract and the Prometheus rules, and ``promtool check config`` checks the Prometheus configuration
(never skipped: ``scripts/test.sh`` installs promtool).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from salespulse.cli import main as cli_main
from salespulse.config import load_config
from tests.integration import dashboard as board
from salespulse.settings import Settings
from salespulse.topics import (
    ALERTS_TOPIC,
    CRM_RAW_TOPIC,
    DLQ_TOPIC,
    EVENTS_TOPIC,
    METRIC_FAMILIES,
    metrics_topic,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERT_RULES = ROOT / "prometheus" / "alerts.yml"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
CONTRACT = ROOT / "docs" / "contract.md"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
ENV_FILE = "deploy/salespulse.env"
ENV_EXAMPLE = ROOT / "deploy" / "salespulse.env.example"
#: What the env file is for (the issue): the webhook secret, the CRM secrets and the public URL.
ENV_FILE_SETTINGS = {
    "SALESPULSE_WEBHOOK_SECRET",
    "SALESPULSE_HUBSPOT_CLIENT_SECRET",
    "SALESPULSE_PIPEDRIVE_BASIC_AUTH",
    "SALESPULSE_CLOSE_SIGNATURE_KEY",
    "SALESPULSE_SALESFORCE_ORG_ID",
    "SALESPULSE_PUBLIC_URL",
}

#: The Grafana schema version of the pinned grafana/grafana image (12.0): dashboards are stored as such.
GRAFANA_SCHEMA_VERSION = 41

SALESPULSE_SERVICES = {"ingest": "ingest", "worker-1": "worker", "worker-2": "worker"}
OFFICIAL_IMAGES = {
    "kafka": "apache/kafka",
    "kafka-init": "apache/kafka",
    "redis": "redis",
    "prometheus": "prom/prometheus",
    "alertmanager": "prom/alertmanager",
    "grafana": "grafana/grafana",
}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# --------------------------------------------------------------------------- helpers


def settings_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    assert prefix == "SALESPULSE_"
    return {f"{prefix}{name.upper()}" for name in Settings.model_fields}


def unknown_salespulse_names(names: set[str]) -> set[str]:
    """The ``SALESPULSE_*`` names among ``names`` that are no Settings field (typos, removed knobs)."""
    return {n for n in names if n.startswith("SALESPULSE_")} - settings_env_names()


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def interpolate(value: str, given: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` as a user's shell would see them."""
    given = given or {}

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in given:
            return given[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise KeyError(f"{name} is required: {arg}")
        return ""

    return INTERPOLATION.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


def command_args(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    assert command, "no command"
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> repo-relative source, for bind mounts of files or folders of the repo."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume["target"]
        else:  # interpolated first: ${SALESPULSE_CONFIG_FILE:-./deploy/salespulse.toml} holds a colon
            parts = interpolate(volume).split(":")
            source, target = parts[0], parts[1]
        if source.startswith(("./", "../", "/")):
            mounts[target] = str(PurePosixPath(source.removeprefix("./")))
    return mounts


def image_repository(image: str) -> str:
    image = image.split("@", 1)[0]
    name, _, tag = image.rpartition(":")
    if "/" in tag or not name:  # no tag (a registry port looks like a tag)
        return image
    return name


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_json(keyword: str) -> list[str]:
    values = [rest for kw, rest in dockerfile_instructions() if kw == keyword]
    assert values, f"Dockerfile has no {keyword}"
    parsed = json.loads(values[-1])  # the last one wins
    assert isinstance(parsed, list), f"{keyword} must be in exec (JSON) form"
    return parsed


def topics_created(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """topic -> {partitions, configs} from the ``kafka-topics.sh --create`` lines of the init container."""
    command = service.get("command")
    script = command if isinstance(command, str) else "\n".join(str(c) for c in command)
    topics: dict[str, dict[str, Any]] = {}
    for line in script.splitlines():
        if "--create" not in line:
            continue
        args = shlex.split(line)
        opts: dict[str, Any] = {"configs": {}}
        for flag, value in zip(args, args[1:]):
            if flag == "--topic":
                opts["topic"] = value
            elif flag == "--partitions":
                opts["partitions"] = int(value)
            elif flag == "--replication-factor":
                opts["replication_factor"] = int(value)
            elif flag == "--config":
                key, _, val = value.partition("=")
                opts["configs"][key] = val
        assert "topic" in opts, f"a --create line without --topic: {line!r}"
        topics[opts.pop("topic")] = opts
    return topics


def env_file_values(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a Compose env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=value: {line!r}"
            values[name.strip()] = value
    return values


def env_files(service: dict[str, Any]) -> list[dict[str, Any]]:
    files = service.get("env_file") or []
    files = [files] if isinstance(files, str) else files
    return [{"path": f, "required": True} if isinstance(f, str) else f for f in files]


def salespulse_settings(service: dict[str, Any], env_file: dict[str, str] | None = None) -> Settings:
    """The Settings the container would build from its env file (the example's, when its secret is filled in)
    and its environment, which wins; empty values are unset, as Settings reads them."""
    env = {"SALESPULSE_WEBHOOK_SECRET": "test-secret"} if env_file is None else {}
    env.update({name: value for name, value in (env_file or {}).items() if name.startswith("SALESPULSE_")})
    env.update({
        name: interpolate(value) for name, value in environment(service).items() if name.startswith("SALESPULSE_")
    })
    fields = {name.removeprefix("SALESPULSE_").lower(): value for name, value in env.items() if value != ""}
    return Settings(**fields)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load(PROMETHEUS_CONFIG.read_text())


# --------------------------------------------------------------------------- the helpers can fail


def test_helpers_catch_mistakes() -> None:
    assert unknown_salespulse_names({"SALESPULSE_KAFKA_URL", "SALESPULSE_PARTITION", "OTHER"}) == {
        "SALESPULSE_PARTITION"
    }
    assert interpolate("${X:-7}") == "7"
    with pytest.raises(KeyError):
        interpolate("${SECRET:?set it}")
    assert image_repository("prom/prometheus:v3.5.0") == "prom/prometheus"
    assert image_repository("localhost:5000/redis") == "localhost:5000/redis"
    assert topics_created({"command": "kt --create --topic a --partitions 3 --config cleanup.policy=compact"}) == {
        "a": {"partitions": 3, "configs": {"cleanup.policy": "compact"}}
    }


# --------------------------------------------------------------------------- environment


def test_salespulse_services_exist_and_are_built_from_the_dockerfile(services: dict[str, Any]) -> None:
    for name in SALESPULSE_SERVICES:
        assert name in services, f"service {name} missing"
        build = services[name].get("build")
        assert build, f"{name} is not built from the Dockerfile"
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context / dockerfile).resolve() == DOCKERFILE


def test_every_salespulse_variable_is_a_settings_field(services: dict[str, Any]) -> None:
    used: set[str] = set()
    for service in services.values():
        env = environment(service)
        used |= set(env)
        for value in env.values():  # ${SALESPULSE_...} interpolations from the user's shell
            used |= {m.group(1) for m in INTERPOLATION.finditer(value)}
    used |= {
        m.group(1)
        for kw, rest in dockerfile_instructions()
        if kw in ("ENV", "ARG", "HEALTHCHECK")
        for m in re.finditer(r"(SALESPULSE_[A-Z0-9_]+)", rest)
    }
    assert {n for n in used if n.startswith("SALESPULSE_")}, "no SALESPULSE_ variable found at all"
    assert unknown_salespulse_names(used) == set()


def test_salespulse_settings_of_each_service(services: dict[str, Any]) -> None:
    kafka_env = environment(services["kafka"])
    advertised = kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    for name in SALESPULSE_SERVICES:
        settings = salespulse_settings(services[name])
        assert settings.kafka_url == "kafka://kafka:9092", name
        assert f"PLAINTEXT://{settings.kafka_bootstrap}" in advertised, f"{name}: broker does not advertise it"
        assert settings.redis_url == "redis://redis:6379/0", name
        assert settings.partitions == 8, name
        assert settings.tansu_compat is False and not settings.use_tansu_workarounds, name


def test_workers_share_one_app_id(services: dict[str, Any]) -> None:
    app_ids = {salespulse_settings(services[n]).app_id for n, role in SALESPULSE_SERVICES.items() if role == "worker"}
    assert len(app_ids) == 1, app_ids


def test_secrets_and_the_public_url_come_from_a_git_ignored_env_file(services: dict[str, Any]) -> None:
    for name in SALESPULSE_SERVICES:
        assert {"path": ENV_FILE, "required": True} in env_files(services[name]), name
    ignored = subprocess.run(["git", "check-ignore", "-q", ENV_FILE], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"{ENV_FILE} must be git-ignored (it holds the real secrets)"
    example = env_file_values(ENV_EXAMPLE)
    assert ENV_FILE_SETTINGS <= set(example), ENV_FILE_SETTINGS - set(example)
    assert unknown_salespulse_names(set(example)) == set()
    assert all(value == "" for value in example.values()), "the example must hold no secret value"
    secret_fields = {f"SALESPULSE_{n.upper()}" for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
    for name, service in services.items():  # a secret is never written into the compose file
        assert not secret_fields & set(environment(service)), name


def test_the_env_file_example_as_the_containers_read_it(services: dict[str, Any]) -> None:
    example = env_file_values(ENV_EXAMPLE)
    settings = salespulse_settings(services["ingest"], example)
    assert settings.webhook_secret is None, "an empty line must leave the secret unset (ingest then refuses to start)"
    assert settings.public_url is None and settings.hubspot_client_secret is None
    filled = dict(example, SALESPULSE_WEBHOOK_SECRET="s3cret", SALESPULSE_PUBLIC_URL="https://hooks.example.com/")
    settings = salespulse_settings(services["ingest"], filled)
    assert settings.webhook_secret is not None and settings.webhook_secret.get_secret_value() == "s3cret"
    assert settings.public_url == "https://hooks.example.com"


def test_the_config_file_is_mounted_where_salespulse_config_points_and_is_valid(services: dict[str, Any]) -> None:
    for name in SALESPULSE_SERVICES:
        service = services[name]
        path = salespulse_settings(service).config
        assert path is not None, f"{name}: SALESPULSE_CONFIG is not set"
        source = bind_mounts(service).get(str(path))
        assert source is not None, f"{name}: nothing is mounted at SALESPULSE_CONFIG={path}"
        assert any(interpolate(str(v)).endswith(f"{path}:ro") for v in service["volumes"]), f"{name}: mount it read-only"
        load_config(ROOT / source)  # raises ConfigError naming file, line and key


def test_grafana_admin_password_is_required(services: dict[str, Any]) -> None:
    value = environment(services["grafana"])["GF_SECURITY_ADMIN_PASSWORD"]
    with pytest.raises(KeyError, match="GRAFANA_ADMIN_PASSWORD"):
        interpolate(value)
    assert interpolate(value, {"GRAFANA_ADMIN_PASSWORD": "x7"}) == "x7"


def test_prometheus_retention_is_set_and_keeps_the_images_paths(services: dict[str, Any]) -> None:
    service = services["prometheus"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in map(interpolate, command_args(service)))
    assert re.fullmatch(r"\d+[smhdwy]", flags.get("storage.tsdb.retention.time", "")), flags
    assert re.fullmatch(r"\d+(B|KB|MB|GB|TB)", flags.get("storage.tsdb.retention.size", "")), flags
    assert flags["config.file"] == "/etc/prometheus/prometheus.yml"
    volumes = [v for v in service["volumes"] if isinstance(v, str) and not v.startswith(".")]
    assert f"prometheus-data:{flags['storage.tsdb.path']}" in volumes, "the TSDB path must be the data volume"


# --------------------------------------------------------------------------- commands and ports


def test_dockerfile_entrypoint_is_the_salespulse_command() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert dockerfile_json("ENTRYPOINT") == ["salespulse"]
    assert "salespulse" in scripts
    cmd = dockerfile_json("CMD")
    assert cmd == ["worker"] and cmd[0] in cli_main.commands


def test_dockerfile_base_user_port_and_healthcheck() -> None:
    instructions = dockerfile_instructions()
    assert [rest for kw, rest in instructions if kw == "FROM"][0] == "python:3.11-slim"
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "must run as a non-root user"
    assert "8080" in " ".join(rest for kw, rest in instructions if kw == "EXPOSE").split()
    healthchecks = [rest for kw, rest in instructions if kw == "HEALTHCHECK"]
    assert healthchecks and "/healthz" in healthchecks[-1] and "python" in healthchecks[-1]
    runs = [rest for kw, rest in instructions if kw == "RUN"]
    # Dependencies only from the lock (versions and hashes), then the package itself without resolving again.
    assert any("pip install --require-hashes --no-deps -r requirements.lock" in rest for rest in runs), runs
    assert any("pip install --no-deps ." in rest for rest in runs), runs


def test_docker_build_context_keeps_what_the_dockerfile_copies() -> None:
    ignored = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()}
    ignored.discard("")
    for kw, rest in dockerfile_instructions():
        if kw != "COPY" or rest.startswith("--from"):
            continue
        for source in rest.split()[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repo"
            assert source.rstrip("/") not in ignored, f"COPY {source}: excluded by .dockerignore"


def listen_port(name: str, service: dict[str, Any]) -> int:
    """Parse the service's command with the real click command; returns its --port."""
    args = command_args(service)
    if args[0] == "salespulse":  # an entrypoint override would repeat the program name
        args = args[1:]
    sub = args[0]
    assert sub in cli_main.commands, f"{name}: {sub!r} is not a salespulse subcommand"
    assert sub == SALESPULSE_SERVICES[name], f"{name} runs {sub!r}"
    ctx = cli_main.commands[sub].make_context(sub, args[1:])
    assert ctx.params["http_host"] == "0.0.0.0", f"{name} must listen beyond loopback in its container"
    assert ctx.params["http_port"] is not None, f"{name}: no --port"
    return int(ctx.params["http_port"])


def test_commands_are_real_subcommands_and_prometheus_scrapes_their_ports(
    services: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    expected = {f"{name}:{listen_port(name, services[name])}" for name in SALESPULSE_SERVICES}
    assert expected == {"ingest:8080", "worker-1:8080", "worker-2:8080"}
    scraped: set[str] = set()
    for job in prometheus_config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                if target.split(":")[0] in SALESPULSE_SERVICES:
                    assert job.get("metrics_path") == "/metrics", job["job_name"]
                    scraped.add(target)
    assert scraped == expected


def test_the_board_service_reads_the_workers_redis_on_loopback(services: dict[str, Any]) -> None:
    board = services["board"]
    args = command_args(board)
    assert args[0] == "board" and "board" in cli_main.commands
    ctx = cli_main.commands["board"].make_context("board", args[1:])
    assert ctx.params["http_host"] == "0.0.0.0" and ctx.params["http_port"] == 8080
    assert salespulse_settings(board).redis_url == salespulse_settings(services["worker-1"]).redis_url
    assert salespulse_settings(board).timezone == salespulse_settings(services["worker-1"]).timezone
    assert ":8080/healthz" in " ".join(board["healthcheck"]["test"])
    assert board["ports"] == ["127.0.0.1:8090:8080"], "the board shows business data: loopback only"
    assert "redis" in board["depends_on"]


def test_compose_healthchecks_use_the_listen_port(services: dict[str, Any]) -> None:
    for name, role in SALESPULSE_SERVICES.items():
        port = listen_port(name, services[name])
        test = " ".join(services[name]["healthcheck"]["test"])
        # Ingest is healthy once Kafka takes its writes; a worker owning no partition is unready yet alive.
        path = "/readyz" if role == "ingest" else "/healthz"
        assert f":{port}{path}" in test, name


# --------------------------------------------------------------------------- Prometheus, Alertmanager, Grafana


def test_prometheus_loads_the_repo_alert_rules(services: dict[str, Any], prometheus_config: dict[str, Any]) -> None:
    mounts = bind_mounts(services["prometheus"])
    config_path = next((t for t, s in mounts.items() if s == "deploy/prometheus/prometheus.yml"), None)
    assert config_path == "/etc/prometheus/prometheus.yml"  # the image's default --config.file
    command = " ".join(command_args(services["prometheus"])) if services["prometheus"].get("command") else ""
    assert "--config.file" not in command or f"--config.file={config_path}" in command
    rules_targets = [t for t, s in mounts.items() if s == "prometheus/alerts.yml"]
    assert len(rules_targets) == 1, "prometheus/alerts.yml is not mounted into Prometheus"
    assert prometheus_config["rule_files"] == rules_targets


def test_prometheus_sends_alerts_to_alertmanager(services: dict[str, Any], prometheus_config: dict[str, Any]) -> None:
    targets = [
        t for am in prometheus_config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]
    ]
    assert targets == ["alertmanager:9093"]
    mounts = bind_mounts(services["alertmanager"])
    assert mounts.get("/etc/alertmanager") == "deploy/alertmanager"  # the image reads alertmanager.yml there
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    assert all(r["receiver"] in receivers for r in config["route"].get("routes", []))
    assert config["global"]["slack_api_url_file"].startswith("/etc/alertmanager/")


def test_grafana_provisioning(services: dict[str, Any]) -> None:
    mounts = bind_mounts(services["grafana"])
    assert mounts.get("/etc/grafana/provisioning") == "deploy/grafana/provisioning"
    datasources = yaml.safe_load((GRAFANA_PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "salespulse.yml").read_text())["providers"]
    assert providers, "no dashboard provider"
    for provider in providers:
        assert provider["type"] == "file"
        path = provider["options"]["path"]
        inside = [t for t in mounts if path == t or path.startswith(t.rstrip("/") + "/")]
        assert inside, f"dashboards path {path} is not mounted into Grafana"


def test_bind_mount_sources_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, source in bind_mounts(service).items():
            assert (ROOT / source).exists(), f"{name}: {source} -> {target} missing"


def test_promtool_checks_the_prometheus_config(tmp_path: Path, prometheus_config: dict[str, Any]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is not on PATH: run the suite with scripts/test.sh, which installs Debian's 'prometheus' "
            "package, or install it yourself (apt-get install prometheus)."
        )
    # rule_files names the container path; check a copy pointing at the repo's rules instead.
    config = dict(prometheus_config, rule_files=[str(ALERT_RULES)])
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool, "check", "config", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


# --------------------------------------------------------------------------- Kafka and images


def test_init_container_creates_the_contract_topics(services: dict[str, Any]) -> None:
    created = topics_created(services["kafka-init"])
    partitions = salespulse_settings(services["worker-1"]).partitions
    plain = {EVENTS_TOPIC, DLQ_TOPIC, ALERTS_TOPIC, CRM_RAW_TOPIC}
    compacted = {metrics_topic(f) for f in METRIC_FAMILIES}
    assert set(created) == plain | compacted
    for topic in plain:
        assert created[topic]["partitions"] == partitions == 8, topic
        assert created[topic]["configs"].get("cleanup.policy", "delete") == "delete", topic
    for topic in compacted:
        assert created[topic]["configs"].get("cleanup.policy") == "compact", topic
    command = services["kafka-init"]["command"]
    script = command if isinstance(command, str) else "\n".join(str(c) for c in command)
    assert set(re.findall(r"--bootstrap-server[= ]+([^\s\"']+)", script)) == {"kafka:9092"}


def test_kafka_is_kraft_with_an_in_network_listener(services: dict[str, Any]) -> None:
    env = environment(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1  # one broker


def test_images_are_the_official_ones(services: dict[str, Any]) -> None:
    for name, repository in OFFICIAL_IMAGES.items():
        image = services[name].get("image", "")
        assert image_repository(image) == repository, f"{name}: {image}"
        assert not image.endswith(":latest") and image != repository, f"{name}: pin a version"


# --------------------------------------------------------------------------- health and start order


def one_shot(name: str, services: dict[str, Any]) -> bool:
    """A job others wait for with ``service_completed_successfully`` (nothing to health-check)."""
    return any(
        isinstance(s.get("depends_on"), dict)
        and s["depends_on"].get(name, {}).get("condition") == "service_completed_successfully"
        for s in services.values()
    )


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if one_shot(name, services):
            assert str(service.get("restart", "no")) == "no", f"{name}: a one-shot job must not restart"
            continue
        check = service.get("healthcheck") or {}
        assert not check.get("disable") and check.get("test"), f"{name} has no healthcheck"


def test_depends_on_waits_for_health(services: dict[str, Any]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dep, spec in depends.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = spec.get("condition")
            assert condition in ("service_healthy", "service_completed_successfully"), f"{name} -> {dep}"
            if condition == "service_healthy":
                assert services[dep].get("healthcheck", {}).get("test"), f"{name} waits for {dep}'s health"
    for name, role in SALESPULSE_SERVICES.items():
        depends = services[name]["depends_on"]
        assert depends["kafka"]["condition"] == "service_healthy", name
        assert depends["kafka-init"]["condition"] == "service_completed_successfully", name
        if role == "worker":
            assert depends["redis"]["condition"] == "service_healthy", name


# --------------------------------------------------------------------------- the Grafana dashboard


def contract_families() -> dict[str, tuple[str, set[str]]]:
    """name -> (kind, labels) from the Prometheus tables of docs/contract.md, the contract's and the extension's
    (names with their prefix)."""
    contract = CONTRACT.read_text()
    text = contract.split("## Prometheus metric families", 1)[1].split("\n## ", 1)[0]
    text += contract.split("### Prometheus families beyond the contract", 1)[1].split("\n## ", 1)[0]
    families = {}
    for row in re.findall(r"^\| `(\w+)` \| (\w+) \| (.+?) \|$", text, flags=re.M):
        name, kind, labels = row
        families[f"salespulse_{name}"] = (kind, set(re.findall(r"`(\w+)`", labels)))
    return families


def code_metric_names() -> set[str]:
    """Every ``salespulse_*`` metric name written in the package's source (prometheus_client names)."""
    names: set[str] = set()
    for path in (ROOT / "salespulse").rglob("*.py"):
        names |= set(re.findall(r"[\"'](salespulse_[a-z0-9_]+)[\"']", path.read_text()))
    return names


def known_series() -> dict[str, set[str] | None]:
    """Series names a query may select -> the labels their family carries (None: not known statically)."""
    known: dict[str, set[str] | None] = {}
    for name, (kind, labels) in contract_families().items():
        known[name] = labels
        if kind == "histogram":
            for suffix in ("_bucket", "_count", "_sum"):
                known[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    for name in code_metric_names():
        # prometheus_client adds _total to counters, _bucket/_count/_sum to histograms
        for series in (name, name + "_total", name + "_bucket", name + "_count", name + "_sum"):
            known.setdefault(series, None)
    return known


_SELECTOR = re.compile(r"\b(salespulse_[a-z0-9_]+)\{([^}]*)\}")


def selector_labels(expr: str) -> list[tuple[str, str]]:
    """(series name, label) of every label matcher written inside ``name{...}`` in ``expr``."""
    return [
        (name, label)
        for name, body in _SELECTOR.findall(expr)
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body)
    ]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return board.load()


@pytest.fixture(scope="module")
def provisioned_datasource() -> dict[str, Any]:
    datasources = yaml.safe_load((GRAFANA_PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    return source


def test_dashboard_helpers_catch_mistakes() -> None:
    assert selector_labels('sum(salespulse_a_total{team=~"$team", le="300"}) / salespulse_b') == [
        ("salespulse_a_total", "team"),
        ("salespulse_a_total", "le"),
    ]
    assert board.substitute('x{a=~"$team"}[$__range] "$1"', {"team": "t", "__range": "1m"}) == 'x{a=~"t"}[1m] "$1"'
    with pytest.raises(KeyError):
        board.substitute("$missing", {})
    assert board.prometheus_multi_value(["a", "b.c"]) == "(a|b\\\\.c)"
    families = contract_families()
    assert families["salespulse_lead_response_seconds"] == ("histogram", {"team", "source"})
    assert families["salespulse_activities_total"] == ("counter", {"rep", "team", "kind", "outcome"})
    assert families["salespulse_month_quota_amount"] == ("gauge", {"rep", "currency"})  # the extension's table
    assert families["salespulse_lead_response_sla_seconds"] == ("gauge", set())
    assert "salespulse_worker_events" in code_metric_names()


def test_dashboard_is_mounted_where_grafana_provisioning_reads(services: dict[str, Any]) -> None:
    mounts = bind_mounts(services["grafana"])
    providers = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "salespulse.yml").read_text())["providers"]
    (provider,) = providers
    container_dir = next(t for t, s in mounts.items() if s == "deploy/grafana/dashboards")
    assert provider["options"]["path"] == container_dir
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files == [board.DASHBOARD], files
    assert board.DASHBOARD.parent == DASHBOARDS


def test_dashboard_model(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] == GRAFANA_SCHEMA_VERSION
    assert dashboard["uid"] and dashboard["title"] and dashboard.get("id") is None
    ids = [p["id"] for p in dashboard["panels"]] + [p["id"] for r in dashboard["panels"] for p in r.get("panels", [])]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    titles = [p["title"] for p in board.panels(dashboard)]
    assert len(titles) == len(set(titles)), "panel titles must be unique (they name the end-to-end test cases)"
    for panel in board.panels(dashboard):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"
        assert panel.get("description"), f"{panel['title']}: no description"


def test_every_panel_and_variable_uses_the_datasource_variable(
    dashboard: dict[str, Any], provisioned_datasource: dict[str, Any]
) -> None:
    """No hard-coded datasource uid: an import into another Grafana offers that Grafana's Prometheus."""
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["name"] == "datasource" and variable["query"] == provisioned_datasource["type"] == "prometheus"
    assert dashboard["templating"]["list"][0] is variable, "the datasource variable comes first"
    assert board.DATASOURCE == {"type": "prometheus", "uid": "${datasource}"}
    for panel in board.panels(dashboard):
        assert panel["datasource"] == board.DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target.get("datasource", board.DATASOURCE) == board.DATASOURCE, (panel["title"], target["refId"])
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == board.DATASOURCE, v["name"]
    assert f'"uid": "{provisioned_datasource["uid"]}"' not in json.dumps(dashboard), "a hard-coded datasource uid"


def test_every_difference_over_an_offset_carries_the_range_guard(dashboard: dict[str, Any]) -> None:
    """``x - (x offset w or vector(0))`` alone shows the all-time total when Prometheus has nothing at ``now - w``
    (retention shorter than the range, or a new Prometheus): each such query is guarded by data at ``now - w``."""
    for panel in board.panels(dashboard):
        for target in board.targets(panel):
            for window in ("$__range", "$window"):
                if f"offset {window}) or" in target.expr or f"offset {window}) - " in target.expr:
                    guard = board.RANGE_GUARD.format(window=window)
                    assert guard in target.expr, f"{panel['title']} {target.ref_id}: no range guard for {window}"
            assert "offset 1h" not in target.expr, f"{panel['title']}: a literal window (use $window)"


def test_within_sla_divides_by_leads_created_with_the_exported_sla(dashboard: dict[str, Any]) -> None:
    """docs/metrics.md: within-SLA rate = leads first touched within the SLA / leads *created*; the SLA is the one the
    workers export (never a bucket picked by hand): the numerator is their exact counter, the title shows the SLA."""
    (variable,) = [v for v in board.variables(dashboard) if v.name == "sla"]
    assert variable.query_result() == "max(salespulse_lead_response_sla_seconds)"
    raw = next(v for v in dashboard["templating"]["list"] if v["name"] == "sla")
    assert raw["hide"] == 2, "the SLA comes from the workers, nobody picks it"
    assert variable.pick([board.query_result_text({"metric": {}, "value": [1700000000.5, "300"]})]) == ["300"]
    for title in ("First touched within the ${sla} s SLA", "Within the ${sla} s SLA by team (rolling $window)"):
        (panel,) = [p for p in board.panels(dashboard) if p["title"] == title]
        (target,) = board.targets(panel)
        numerator, _, denominator = target.expr.partition(") / (")
        assert "salespulse_lead_response_within_sla_total" in numerator and "le=" not in numerator, title
        assert "salespulse_leads_created_total" in denominator and "_count" not in denominator, title


def test_stage_panels_sort_by_the_exported_stage_order(dashboard: dict[str, Any]) -> None:
    for title in ("Funnel: deals entering each stage", "Time in stage, median and p90", "Open pipeline by stage ($currency)"):
        (panel,) = [p for p in board.panels(dashboard) if p["title"] == title]
        order = [t for t in panel["targets"] if "salespulse_pipeline_stage_order" in t["expr"]]
        assert len(order) == 1, title
        (merge, sort, organize) = panel["transformations"]
        assert merge["id"] == "merge" and sort["id"] == "sortBy" and organize["id"] == "organize"
        assert sort["options"]["sort"] == [{"field": f"Value #{order[0]['refId']}", "desc": False}], title
        assert organize["options"]["excludeByName"][f"Value #{order[0]['refId']}"] is True
        assert all(t.get("format") == "table" for t in panel["targets"]), title


def test_money_panels_carry_a_currency(dashboard: dict[str, Any]) -> None:
    money = ["salespulse_revenue_won_total", "_pipeline_amount"]
    for panel in board.panels(dashboard):
        exprs = " ".join(t.expr for t in board.targets(panel))
        if any(name in exprs for name in money) and "quota" not in panel["title"].lower():
            assert panel["fieldConfig"]["defaults"]["unit"].startswith("currency"), panel["title"]
            assert "($currency)" in panel["title"], panel["title"]
            assert 'currency="$currency"' in exprs, panel["title"]


def test_per_rep_panels_show_the_configured_display_names(dashboard: dict[str, Any]) -> None:
    for panel in board.panels(dashboard):
        for target in board.targets(panel):
            if "sum by (rep" in target.expr and panel["type"] == "bargauge":
                assert "group_left (display_name)" in target.expr and "salespulse_rep_info" in target.expr, panel["title"]
                assert "{{display_name}}" in panel["targets"][0]["legendFormat"], panel["title"]


def test_every_metric_a_panel_queries_is_a_contract_family_or_exported_by_the_code(dashboard: dict[str, Any]) -> None:
    known = known_series()
    used: dict[str, set[str]] = {}
    for panel in board.panels(dashboard):
        for target in board.targets(panel):
            for name in board.metric_names(target.expr):
                used.setdefault(name, set()).add(panel["title"])
    for variable in board.variables(dashboard):
        if variable.type == "query":
            for name in board.metric_names(variable.query):
                used.setdefault(name, set()).add(f"${variable.name}")
    unknown = {name: sorted(where) for name, where in used.items() if name not in known}
    assert not unknown, f"metrics neither in the contract nor in the code: {unknown}"


def test_panel_label_matchers_name_labels_their_family_carries(dashboard: dict[str, Any]) -> None:
    labels_of = known_series()
    wrong = []
    exprs = [(p["title"], t.expr) for p in board.panels(dashboard) for t in board.targets(p)]
    exprs += [(f"${v.name}", v.query) for v in board.variables(dashboard) if v.type == "query"]
    for where, expr in exprs:
        for name, label in selector_labels(expr):
            allowed = labels_of.get(name)
            if allowed is not None and label not in allowed:
                wrong.append(f"{where}: {name} has no label {label!r} (labels: {sorted(allowed)})")
    assert not wrong, "\n".join(wrong)


def test_template_variables_resolve(dashboard: dict[str, Any]) -> None:
    """Query variables are label_values of a label their family carries, chained only on earlier variables;
    every variable a panel uses is defined; custom variables default to one of their options."""
    families = known_series()
    defined: list[str] = []
    for variable in board.variables(dashboard):
        if variable.type == "datasource":
            pass
        elif variable.type == "query" and variable.query_result() is not None:
            expr = variable.query_result()
            assert expr is not None and board.variables_used(expr) <= set(defined), variable.name
            assert variable.regex, f"${variable.name}: query_result needs a regex picking the value"
        elif variable.type == "query":
            selector, label = variable.label_values()
            (name,) = board.metric_names(selector)
            assert label in (families[name] or set()), f"${variable.name}: {name} has no label {label}"
            assert board.variables_used(selector) <= set(defined), f"${variable.name} uses a later variable"
            if variable.multi:
                raw = next(v for v in dashboard["templating"]["list"] if v["name"] == variable.name)
                assert raw.get("allValue") == ".*", f"${variable.name}: 'All' must match every value"
        else:
            assert variable.type == "custom", variable
            assert variable.default in variable.query.split(","), variable
        defined.append(variable.name)
    for panel in board.panels(dashboard):
        for target in board.targets(panel):
            used = board.variables_used(target.expr) - {"1"}
            undefined = used - set(defined) - set(board.GLOBAL_VARIABLES)
            assert not undefined, f"{panel['title']}: undefined variables {undefined}"
