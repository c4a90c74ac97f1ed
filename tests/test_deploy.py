"""The deploy recipes start the gateway the way this repository runs it."""

from __future__ import annotations

from pathlib import Path

import yaml

from gateway.settings import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_render_blueprint_runs_poolgate_with_a_health_check_and_shared_redis():
    blueprint = yaml.safe_load((DEPLOY / "render" / "render.yaml").read_text())
    web = next(s for s in blueprint["services"] if s["type"] == "web")
    assert web["startCommand"] == "poolgate serve"
    assert web["healthCheckPath"] == "/health"
    env = {v["key"]: v for v in web["envVars"]}
    assert env["REDIS_URL"]["fromService"]["type"] == "keyvalue"
    for secret in ("PROXY_KEY", "OPENAI_KEY", "ANTHROPIC_KEY"):
        assert env[secret] == {"key": secret, "sync": False}, "secrets are entered in the dashboard, never committed"
    assert any(s["type"] == "keyvalue" and s["name"] == env["REDIS_URL"]["fromService"]["name"]
               for s in blueprint["services"])


def test_huggingface_image_listens_where_spaces_expect():
    dockerfile = (DEPLOY / "huggingface" / "Dockerfile").read_text()
    assert 'CMD ["poolgate", "serve"]' in dockerfile
    assert "EXPOSE 7860" in dockerfile
    assert Settings().port == 7860
