"""No Docker engine runs here, so docker/ is checked by reading it: every command the compose file
runs must parse with our CLI, every variable it sets must be a setting, and the start order must
wait for what each service needs."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from wearsync.cli import parser
from wearsync.dev import dev_environment
from wearsync.models import ProviderName
from wearsync.settings import PROVIDER_SETTINGS, Settings

DOCKER = Path(__file__).resolve().parent.parent / "docker"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yml").read_text())
    return data


def _setting_names() -> set[str]:
    names = {"WEARSYNC_DATABASE_URL", "WEARSYNC_REDIS_URL"}  # the second choice of their aliases
    return names | set(Settings.variables().values())


def test_services_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker", "sim"}
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    assert services["sim"]["profiles"] == ["sim"]
    for name in ("postgres", "redis", "api", "worker", "sim"):
        assert services[name]["healthcheck"]["test"], name


def test_every_command_is_a_wearsync_command(compose: dict[str, Any]) -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["wearsync"]' in dockerfile
    commands = [s["command"] for n, s in compose["services"].items() if n not in ("postgres", "redis")]
    commands.append(["worker", "--check"])  # the worker's health check
    default_cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert default_cmd is not None
    commands.append(yaml.safe_load(default_cmd.group(1)))
    for command in commands:
        parser().parse_args(command)  # exits (fails the test) on an unknown command or option
    assert compose["services"]["worker"]["healthcheck"]["test"] == ["CMD", "wearsync", "worker", "--check"]


def test_image_runs_as_non_root() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users
    assert users[-1] not in ("root", "0")


def test_environment_is_made_of_real_settings(compose: dict[str, Any]) -> None:
    known = _setting_names()
    for name in ("migrate", "api", "worker"):
        env = compose["services"][name]["environment"]
        assert set(env) <= known, set(env) - known
        for provider in ProviderName:
            assert f"WEARSYNC_{provider.upper()}_API_URL" in env
    env = compose["services"]["api"]["environment"]
    # Services reach each other by service name, with the credentials postgres is given.
    pg = compose["services"]["postgres"]["environment"]
    assert env["DATABASE_URL"] == (
        f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
    )
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    # Defaults of the interpolated provider URLs are the settings' defaults (the real providers).
    defaults = {variable: Settings.model_fields[name].default for name, variable in Settings.variables().items()
                if name in Settings.model_fields}  # fmt: skip
    for config in PROVIDER_SETTINGS.values():
        defaults |= {variable: config.model_fields[name].default for name, variable in config.variables().items()}
    for key, value in env.items():
        match = re.fullmatch(r"\$\{(\w+):-(.*)\}", str(value))
        if match and key.endswith("_URL"):
            assert match.group(2) == defaults[key], key


def test_sim_env_points_every_provider_at_the_simulator() -> None:
    lines = [line for line in (DOCKER / "sim.env").read_text().splitlines() if line and not line.startswith("#")]
    env = dict(line.split("=", 1) for line in lines)
    assert env.pop("COMPOSE_PROFILES") == "sim"
    # The same settings `make run` uses, with the simulator reached by its service name; but the
    # browser, outside the compose network, finds authorization pages and the API on published ports.
    expected = dev_environment({}, "http://sim:8090") | {"WEARSYNC_PUBLIC_URL": "http://localhost:8080"}
    expected |= {f"WEARSYNC_{p.upper()}_AUTHORIZE_URL": f"http://localhost:8090/{p}/auth" for p in ProviderName}
    assert env == expected
    assert set(env) <= _setting_names()


def test_api_health_check_hits_the_health_route(compose: dict[str, Any]) -> None:
    check = " ".join(compose["services"]["api"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8080/health" in check
    assert compose["services"]["api"]["command"][-1] == "8080"
    assert compose["services"]["api"]["ports"][0].endswith(":8080")
