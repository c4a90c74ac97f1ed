"""PAGE_BODY: an operator's page with the OAI Reverse Proxy's {tags} and Jinja syntax, sandboxed and escaped."""

from __future__ import annotations

import html as html_lib
import json
import logging
import re
from pathlib import Path

import httpx
from status_helpers import SECRETS, busy_gateway, page_body

LEGACY_TAGS = (
    "uptime", "title", "endpoints:openai", "endpoints:anthropic", "proompts", "proomptersNow", "openaiKeys",
    "anthropicKeys", "status", "build", "anthropic:activeKeys", "anthropic:proomptersInQueue",
    "anthropic:estimatedQueueTime", "user:data", "user:aliases",
    *(f"{family}:{stat}" for family in ("turbo", "gpt4", "gpt432k")
      for stat in ("activeKeys", "overQuotaKeys", "revokedKeys", "proomptersInQueue", "estimatedQueueTime")),
)


def tagged_page(gateway_start, tags, **env):
    body = "<html><body>" + "".join(f'<p id="{t}">{{{t}}}</p>' for t in tags) + "</body></html>"
    gateway = busy_gateway(gateway_start, PAGE_BODY=page_body(body), **env)
    reply = httpx.get(gateway.url + "/")
    assert reply.status_code == 200
    shown = {m.group(1): html_lib.unescape(m.group(2)) for m in re.finditer(r'<p id="([^"]+)">(.*?)</p>', reply.text)}
    return gateway, shown, reply.text


def test_every_legacy_tag_shows_a_real_value(start_gateway):
    gateway, shown, _ = tagged_page(start_gateway, LEGACY_TAGS, SERVER_TITLE="Ann's proxy")
    status = httpx.get(gateway.url + "/status").json()
    assert "{" not in "".join(v for k, v in shown.items() if not k.startswith("user:")), "no tag left unreplaced"
    assert int(shown["uptime"]) >= 0
    assert shown["title"] == "Ann's proxy"
    assert shown["endpoints:openai"] == gateway.url + "/proxy/openai"
    assert shown["endpoints:anthropic"] == gateway.url + "/proxy/anthropic"
    assert shown["proompts"] == "11" and shown["proomptersNow"] == "1"
    assert shown["openaiKeys"] == "4" and shown["anthropicKeys"] == "2"
    assert shown["status"] == status["status"] and shown["build"] == status["build"]
    assert shown["anthropic:activeKeys"] == "2"
    assert shown["anthropic:proomptersInQueue"] == "7", "every Claude family together"
    assert shown["anthropic:estimatedQueueTime"] == "1 min 35 sec"
    assert (shown["turbo:activeKeys"], shown["turbo:overQuotaKeys"], shown["turbo:revokedKeys"]) == ("1", "1", "1")
    assert shown["turbo:proomptersInQueue"] == "0" and shown["turbo:estimatedQueueTime"] == "no wait"
    assert shown["gpt4:activeKeys"] == "1" and shown["gpt432k:revokedKeys"] == "1"
    assert json.loads(shown["user:data"])["active_now"] == 1
    assert json.loads(shown["user:aliases"]) == []


def test_json_and_header_tags_give_the_status_data_and_the_default_header(start_gateway):
    body = "<header>{headerHtml}</header><pre>{JSON}</pre><script>const s = {JSON};</script>"
    gateway = busy_gateway(start_gateway, PAGE_BODY=page_body(body), SERVER_TITLE="</pre><b>x</b>")
    page = httpx.get(gateway.url + "/").text
    header = re.search(r"<header>(.*?)</header>", page, re.S).group(1)
    assert "<h1>&lt;/pre&gt;&lt;b&gt;x&lt;/b&gt;</h1>" in header and "Up " in header
    in_pre = json.loads(html_lib.unescape(re.search(r"<pre>(.*?)</pre>", page, re.S).group(1)))
    in_script = json.loads(re.search(r"const s = (.*?);</script>", page, re.S).group(1))
    assert in_pre == in_script
    assert in_pre["families"]["gpt-4o"]["in_queue"] == 3 and in_pre["title"] == "</pre><b>x</b>"
    assert "</pre><b>" not in page, "the title cannot close the <pre> or inject markup"


def test_any_family_and_stat_has_a_tag(start_gateway):
    tags = ("gpt-4o:activeKeys", "gpt-4o:coolingDownKeys", "gpt-4o:proomptersInQueue", "gpt-4o:estimatedQueueTime",
            "gpt-4o:proompts", "claude-sonnet:proomptersInQueue", "claude-opus:estimatedQueueTime", "o-series:tokens")
    _, shown, _ = tagged_page(start_gateway, tags)
    assert [shown[t] for t in tags] == ["1", "1", "3", "42 sec", "8", "7", "no wait", "0"]


def test_config_tags_show_public_settings_and_never_a_secret(start_gateway):
    tags = ("config:gatekeeper", "config:max_request_bytes", "config:page_body", "config:proxy_key",
            "config:admin_key", "config:openai_key", "config:service_info_password", "config:redis_url")
    _, shown, page = tagged_page(start_gateway, tags, SERVER_TITLE="t")
    assert shown["config:gatekeeper"] == "proxy_key" and shown["config:max_request_bytes"] == "33554432"
    for secret_tag in tags[2:]:
        assert shown[secret_tag] == "{" + secret_tag + "}", "a secret's name is an unknown tag, shown as written"
    for secret in SECRETS:
        assert secret not in page


def test_jinja_syntax_reads_the_same_data(start_gateway):
    body = (
        "<ul>{% for name, f in families.items() if f.in_queue %}"
        "<li>{{ name }}: {{ f.in_queue }} waiting, {{ f.estimated_wait }}</li>{% endfor %}</ul>"
        "<p>{{ title | upper }} / {{ keys.openai.revoked }} revoked / {{ config.gatekeeper }} / {proompts}</p>"
    )
    gateway = busy_gateway(start_gateway, PAGE_BODY=page_body(body), SERVER_TITLE="<i>pool</i>")
    page = httpx.get(gateway.url + "/").text
    assert "<li>gpt-4o: 3 waiting, 42 sec</li>" in page and "<li>claude-sonnet: 7 waiting, 1 min 35 sec</li>" in page
    assert "<p>&lt;I&gt;POOL&lt;/I&gt; / 1 revoked / proxy_key / 11</p>" in page


def test_unknown_tags_stay_visible_and_are_named_in_the_log(start_gateway, caplog):
    caplog.set_level(logging.WARNING, logger="poolgate")
    body = "<p>{proompts} {promptz} {gpt4:activeKeyz} {config:proxy_key}</p><style>p{margin:0}</style>"
    gateway = busy_gateway(start_gateway, PAGE_BODY=page_body(body))
    page = httpx.get(gateway.url + "/").text
    assert "<p>11 {promptz} {gpt4:activeKeyz} {config:proxy_key}</p><style>p{margin:0}</style>" in page
    warnings = [r.getMessage() for r in caplog.records if "PAGE_BODY" in r.getMessage()]
    assert len(warnings) == 1 and "{promptz}" in warnings[0] and "{config:proxy_key}" in warnings[0]


def test_a_template_that_does_not_compile_gives_visitors_the_default_page(start_gateway, caplog):
    caplog.set_level(logging.ERROR, logger="poolgate")
    gateway = busy_gateway(start_gateway, PAGE_BODY=page_body("<p>\n{% for x in families %}{{ x }}</p>"))
    for _ in range(3):
        reply = httpx.get(gateway.url + "/")
        assert reply.status_code == 200
        assert "custom page could not be shown" in reply.text and 'data-family="gpt-4o"' in reply.text
        assert "Traceback" not in reply.text and "endfor" not in reply.text
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "PAGE_BODY is not a valid template (line 2:" in errors[0]
    assert "Traceback" not in caplog.text


def test_the_sandbox_refuses_to_reach_python_internals(start_gateway, caplog):
    caplog.set_level(logging.ERROR, logger="poolgate")
    body = "<p>{{ title.__class__.__mro__[1].__subclasses__() }}</p>{{ families.clear() }}"
    gateway = busy_gateway(start_gateway, PAGE_BODY=page_body(body))
    for _ in range(2):
        reply = httpx.get(gateway.url + "/")
        assert reply.status_code == 200 and "custom page could not be shown" in reply.text
        assert "subclasses" not in reply.text and "Traceback" not in reply.text
    errors = [r.getMessage() for r in caplog.records if "PAGE_BODY" in r.getMessage()]
    assert len(errors) == 1 and "PAGE_BODY could not be rendered" in errors[0], "once per distinct error"
    assert httpx.get(gateway.url + "/status").json()["families"]["gpt-4o"]["in_queue"] == 3


def test_the_readme_example_renders_every_tag(start_gateway):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Your own page: `PAGE_BODY`", 1)[1]
    example = section.split("```html\n", 1)[1].split("```", 1)[0]
    gateway = busy_gateway(start_gateway, PAGE_BODY=page_body(example))
    page = httpx.get(gateway.url + "/").text
    assert "custom page could not be shown" not in page
    assert re.search(r"(?<!\{)\{[\w:.\-]+\}", page.split("<pre>")[0]) is None, "every tag is known"
    assert f"<code>{gateway.url}/proxy/openai</code>" in page
    assert "GPT-4o queue: 3 (42 sec)" in page and "Claude queue: 7 (1 min 35 sec)" in page
    assert "<li>gpt-4o: 1 keys, 42 sec</li>" in page
