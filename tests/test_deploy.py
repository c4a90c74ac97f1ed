"""The deploy recipes start the gateway the way this repository runs it.

There is no Docker daemon in CI, so the recipes are read as the platforms read them: the Dockerfile's
instructions, the blueprint and compose YAML, railway.json; every command they run is checked against
the real command line, and the image's start command is run as the image would run it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from processes import free_port, wait_until_listening

from gateway.cli import build_parser, render_config_reference
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def _poolgate_command(command: str | list[str]) -> list[str]:
    """The arguments after `poolgate`, once the command line has accepted them all (exits the test if not)."""
    words = shlex.split(command) if isinstance(command, str) else list(command)
    assert words[0] == "poolgate", f"{command!r} does not run poolgate"
    try:
        build_parser().parse_args(words[1:])
    except SystemExit:
        pytest.fail(f"`{' '.join(words)}` is not a command poolgate accepts")
    return words[1:]


def _dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


def _dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, args in instructions:
        if name == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(args))  # type: ignore[misc]
    return env


def _clean_environment() -> dict[str, str]:
    names = {row.split("=")[0] for row in render_config_reference("env").splitlines() if not row.startswith("#")}
    return {k: v for k, v in os.environ.items() if k not in names}


# --- HuggingFace Space, and the image Railway and Compose build ---


def test_the_space_builds_from_the_repository_root_and_from_deploy_huggingface_alike():
    assert (ROOT / "Dockerfile").read_text() == (DEPLOY / "huggingface" / "Dockerfile").read_text()


def test_the_image_runs_poolgate_serve_as_uid_1000_on_the_port_spaces_expect():
    instructions = _dockerfile(ROOT / "Dockerfile")
    cmd = [args for name, args in instructions if name == "CMD"][-1]
    assert _poolgate_command(json.loads(cmd)) == ["serve"]
    user = [args for name, args in instructions if name == "USER"][-1]
    created = [args for name, args in instructions if name == "RUN" and "useradd" in args]
    assert user == "1000" or any(re.search(rf"--uid 1000\b.*\b{user}\b", run) for run in created)
    exposed = [args for name, args in instructions if name == "EXPOSE"]
    assert exposed == ["7860"] and _dockerfile_env(instructions)["PORT"] == "7860" == str(Settings().port)


def test_readme_front_matter_tells_the_space_to_build_the_docker_image_on_its_port():
    readme = (ROOT / "README.md").read_text()
    assert readme.startswith("---\n"), "HuggingFace reads the Space's settings from front matter at the very top"
    front = yaml.safe_load(readme.split("---\n", 2)[1])
    assert front["sdk"] == "docker" and front["app_port"] == 7860 and front["title"] == "poolgate"


def test_dockerignore_keeps_what_the_build_needs_and_drops_secrets_and_history():
    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]

    def sent(name: str) -> bool:
        included = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatch(name, pattern.lstrip("!").removeprefix("**/")):
                included = negated
        return included

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    needed = ["pyproject.toml", "README.md", *(p.rstrip("*") for p in packages["include"])]
    assert [name for name in needed if not sent(name)] == []
    assert [name for name in (".git", ".env", ".env.production") if sent(name)] == []


def test_the_image_start_command_serves_and_writes_nothing(tmp_path):
    """The CMD, with the image's ENV, in an empty working directory and home: it answers, and leaves both empty."""
    instructions = _dockerfile(ROOT / "Dockerfile")
    cmd = _poolgate_command(json.loads([args for name, args in instructions if name == "CMD"][-1]))
    port = free_port()
    env = {**_clean_environment(), **_dockerfile_env(instructions), "PORT": str(port), "HOME": str(tmp_path),
           "PROXY_KEY": "image-pass", "BIND_ADDRESS": "127.0.0.1", "CHECK_KEYS": "false"}
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", *cmd], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_listening(f"http://127.0.0.1:{port}/health", process)
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["status"] == "ok"
        healthcheck = [args for name, args in instructions if name == "HEALTHCHECK"][-1]
        probe = shlex.split(healthcheck.split(" CMD ", 1)[1])
        assert subprocess.run(probe, env=env, cwd=tmp_path, timeout=30).returncode == 0, "the HEALTHCHECK probe"
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert list(tmp_path.iterdir()) == []


# --- Render ---


def _blueprint(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())  # type: ignore[no-any-return]


def test_the_deploy_button_blueprint_at_the_root_is_the_one_in_deploy_render():
    assert _blueprint(ROOT / "render.yaml") == _blueprint(DEPLOY / "render" / "render.yaml")


def test_render_blueprint_runs_poolgate_with_a_health_check_and_shared_redis():
    blueprint = _blueprint(ROOT / "render.yaml")
    web = next(s for s in blueprint["services"] if s["type"] == "web")
    assert _poolgate_command(web["startCommand"]) == ["serve"]
    assert web["healthCheckPath"] == "/health"
    env = {v["key"]: v for v in web["envVars"]}
    assert env["REDIS_URL"]["fromService"]["type"] == "keyvalue"
    for secret in ("PROXY_KEY", "OPENAI_KEY", "ANTHROPIC_KEY"):
        assert env[secret] == {"key": secret, "sync": False}, "secrets are entered in the dashboard, never committed"
    assert any(s["type"] == "keyvalue" and s["name"] == env["REDIS_URL"]["fromService"]["name"]
               for s in blueprint["services"])


def test_render_blueprint_has_a_key_check_worker_on_the_web_services_redis():
    blueprint = _blueprint(ROOT / "render.yaml")
    web = next(s for s in blueprint["services"] if s["type"] == "web")
    worker = next(s for s in blueprint["services"] if s["type"] == "worker")
    assert _poolgate_command(worker["startCommand"]) == ["worker"]
    redis_of = {s["name"]: next(v for v in s["envVars"] if v["key"] == "REDIS_URL") for s in (web, worker)}
    assert redis_of[worker["name"]]["fromService"] == redis_of[web["name"]]["fromService"]
    assert not any("sync" in v for v in worker["envVars"]), "the worker reads keys from the store, no secret"


# --- Railway ---


def test_railway_builds_the_image_and_starts_a_real_command_with_a_health_check():
    config = json.loads((ROOT / "railway.json").read_text())
    assert (ROOT / config["build"]["dockerfilePath"]).is_file()
    assert _poolgate_command(config["deploy"]["startCommand"]) == ["serve"]
    assert config["deploy"]["healthcheckPath"] == "/health"


# --- Docker Compose ---


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())  # type: ignore[no-any-return]


def test_compose_runs_scalable_gateways_behind_a_balancer_with_workers_and_persistent_redis():
    services = _compose()["services"]
    assert set(services) == {"gateway", "worker", "lb", "redis"}
    assert _poolgate_command(services["gateway"]["command"])[0] == "serve"
    assert _poolgate_command(services["worker"]["command"]) == ["worker"]
    # `--scale gateway=4` needs the gateways unpublished: four containers cannot bind one host port.
    assert "ports" not in services["gateway"] and "container_name" not in services["gateway"]
    for name in ("gateway", "worker"):
        assert services[name]["environment"]["REDIS_URL"].startswith("redis://redis:")
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])


def test_compose_trusts_only_the_balancer_to_name_clients_and_the_balancer_does_not_buffer_streams():
    compose = _compose()
    services = compose["services"]
    balancer_address = services["lb"]["networks"]["poolgate"]["ipv4_address"]
    assert services["gateway"]["environment"]["FORWARDED_ALLOW_IPS"] == balancer_address
    nginx = (DEPLOY / "compose" / "nginx.conf").read_text()
    port = services["gateway"]["environment"]["PORT"]
    assert re.search(rf"server gateway:{port} resolve;", nginx), "every replica, re-resolved as they scale"
    for directive in ("proxy_buffering off;", "proxy_request_buffering off;", "proxy_http_version 1.1;",
                      "X-Forwarded-For $proxy_add_x_forwarded_for;"):
        assert directive in nginx
    mount = services["lb"]["volumes"][0].split(":")
    assert (DEPLOY / "compose" / mount[0]).resolve() == (DEPLOY / "compose" / "nginx.conf").resolve()
