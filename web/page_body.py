"""`PAGE_BODY`: an operator's own status page, with the OAI Reverse Proxy's `{tags}` and Jinja syntax.

Pages written for the legacy proxy keep working: each known `{tag}` becomes a
Jinja expression before the template is compiled, so one sandboxed render
fills both kinds of placeholder and autoescaping applies to both. Unknown tags
are left as written (and named in the log at start-up) so an operator sees a
typo on the page instead of a silent blank.

`{config:<name>}` only ever reads the settings' public view: a secret's name is
an unknown tag, shown as written, never its value.

A template that does not compile or fails while rendering is reported to the
operator in one log line (once per distinct error) and `render` returns None:
the caller then shows visitors the default page.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from catalog.families import known_families
from web.status import format_wait

log = logging.getLogger("poolgate")

# Tags that are not per family or per setting.
PLAIN_TAGS = (
    "JSON", "headerHtml", "uptime", "title", "status", "build", "proompts", "proomptersNow",
    "openaiKeys", "anthropicKeys", "endpoints:openai", "endpoints:anthropic", "user:data", "user:aliases",
)
# `{<family>:<stat>}`: legacy stat name -> the family's field in the status data.
FAMILY_STATS = {
    "activeKeys": "active_keys",
    "coolingDownKeys": "cooling_down_keys",
    "overQuotaKeys": "over_quota_keys",
    "revokedKeys": "revoked_keys",
    "proomptersInQueue": "in_queue",
    "estimatedQueueTime": "estimated_wait",
    "proompts": "prompts",
    "tokens": "tokens",
}
# The legacy proxy's family names; `anthropic` is every Claude family together.
LEGACY_FAMILIES: dict[str, tuple[str, ...]] = {
    "gpt4": ("gpt-4",),
    "gpt432k": ("gpt-4-32k",),
    "anthropic": known_families("anthropic"),
}
CONTEXT_TAGS = "legacy"  # the template variable known tags are read from

# `{name}` or `{scope:name}`, not part of Jinja's `{{ }}`.
_TAG = re.compile(r"(?<!\{)\{([A-Za-z][\w.\-]*(?::[A-Za-z][\w.\-]*)?)\}(?!\})")


class CustomPage:
    """A compiled `PAGE_BODY`, ready to render against the status data."""

    def __init__(self, html: str, public_config_names: Iterable[str]) -> None:
        self._config_names = frozenset(public_config_names)
        self._families = frozenset(
            [*known_families("openai"), *known_families("anthropic"), *LEGACY_FAMILIES]
        )
        self.used_tags: list[str] = []
        unknown: list[str] = []

        def to_jinja(match: re.Match[str]) -> str:
            tag = match.group(1)
            if not self._is_known(tag):
                unknown.append(match.group(0))
                return match.group(0)
            if tag not in self.used_tags:
                self.used_tags.append(tag)
            return "{{ " + CONTEXT_TAGS + "[" + repr(tag) + "] }}"

        source = _TAG.sub(to_jinja, html)
        if unknown:
            log.warning(
                "PAGE_BODY: %s not known tags (or not public settings) and are shown as written",
                ", ".join(dict.fromkeys(unknown)),
            )
        self._reported: set[str] = set()
        env = ImmutableSandboxedEnvironment(autoescape=True)
        try:
            self._template: Any = env.from_string(source)
        except TemplateSyntaxError as error:
            self._template = None
            log.error(
                "PAGE_BODY is not a valid template (line %s: %s); visitors see the default status page until "
                "it is fixed",
                error.lineno, error.message,
            )

    def _is_known(self, tag: str) -> bool:
        if tag in PLAIN_TAGS:
            return True
        scope, _, name = tag.partition(":")
        if scope == "config":
            return LEGACY_CONFIG_NAMES.get(name, name) in self._config_names
        return scope in self._families and name in FAMILY_STATS

    def render(self, status: dict[str, Any], header_html: Markup) -> str | None:
        """The page, or None when the template fails (logged once per distinct error)."""
        if self._template is None:
            return None
        tags = {tag: legacy_value(tag, status, header_html) for tag in self.used_tags}
        context = {**status, "data": status, "header_html": header_html, CONTEXT_TAGS: tags}
        try:
            return str(self._template.render(context))
        except Exception as error:  # whatever the operator's template does wrong, visitors get a page
            message = f"{type(error).__name__}: {error}"
            if message not in self._reported:
                self._reported.add(message)
                log.error("PAGE_BODY could not be rendered (%s); visitors see the default status page", message)
            return None


# The OAI Reverse Proxy's camelCase config names, for pages written for it.
LEGACY_CONFIG_NAMES = {
    "maxContextTokensOpenAI": "max_context_tokens_openai",
    "maxContextTokensAnthropic": "max_context_tokens_anthropic",
    "maxOutputTokensOpenAI": "max_output_tokens_openai",
    "maxOutputTokensAnthropic": "max_output_tokens_anthropic",
}


def legacy_value(tag: str, status: dict[str, Any], header_html: Markup) -> Any:
    """What one legacy tag shows. Plain values are escaped by the template; HTML and JSON come as Markup."""
    simple: dict[str, Any] = {
        "uptime": status["uptime_sec"],
        "title": status["title"],
        "status": status["status"],
        "build": status["build"],
        "proompts": status["prompts"],
        "proomptersNow": status["people_active_now"],
        "openaiKeys": status["keys"]["openai"]["total"],
        "anthropicKeys": status["keys"]["anthropic"]["total"],
    }
    if tag in simple:
        return simple[tag]
    if tag == "JSON":
        return htmlsafe_json_dumps(status, indent=2)  # safe inside <pre> and inside <script>
    if tag == "headerHtml":
        return header_html
    if tag == "user:data":  # only users who chose to be public (`public`) are named; never a token
        users = status["users"]
        return htmlsafe_json_dumps(
            {"users": users["public"], "total": users["total"], "active_now": status["people_active_now"]}
        )
    if tag == "user:aliases":
        return htmlsafe_json_dumps([user["nickname"] for user in status["users"]["public"]])
    scope, _, name = tag.partition(":")
    if scope == "endpoints":
        return status["endpoints"][name]
    if scope == "config":
        return _config_text(status["config"][LEGACY_CONFIG_NAMES.get(name, name)])
    return _family_stat(scope, FAMILY_STATS[name], status)


def _config_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _family_stat(family: str, field: str, status: dict[str, Any]) -> Any:
    families: dict[str, dict[str, Any]] = status["families"]
    if family not in LEGACY_FAMILIES:
        entry = families.get(family)
        if entry is not None:
            return entry[field]
        return "no wait" if field == "estimated_wait" else 0
    members = [families[f] for f in LEGACY_FAMILIES[family] if f in families]
    if family == "anthropic" and field.endswith("_keys"):
        # Summing per family would count a key serving every Claude family once per family.
        return status["keys"]["anthropic"][field.removesuffix("_keys")]
    if field == "estimated_wait":
        return format_wait(max((m["estimated_wait_sec"] for m in members), default=0.0))
    return sum(int(m[field]) for m in members)
