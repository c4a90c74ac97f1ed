"""Users in and out as JSON: poolgate's own export, and the OAI Reverse Proxy's user export.

An import is checked whole before anything is written: the first bad record is
named (its index and field) and nothing is imported. Records are recognised by
their credential: `token` (plaintext) is the OAI Reverse Proxy's, and is hashed
here so its users' tokens keep working; `token_hash` is poolgate's own.

poolgate's export carries each user's `token_hash`, never a token. A restore
from it keeps every token working, and a token hash is no credential: tokens
poolgate makes hold 256 random bits and the OAI Reverse Proxy's are UUIDs, so
nobody finds a token from its hash. The export is still the operator's private
data (addresses, notes), as the admin API is. A user made by signing in carries its
`login` ("google:{email}", "app_store:{subject}"), so after a restore that person
signs in as the same user, with the same quotas, instead of a new one. Each
user's spend per budget month (`spend`) comes along too: a restore in the
middle of a month must not hand everyone their budget again.

The OAI Reverse Proxy keeps counts per its own family names (`gpt4o`,
`claude`, `aws-claude`, ...). Each is mapped to a poolgate family; cloud
variants (`aws-`, `azure-`, `gcp-`) share their model's family. Several
mapped to one family add their counts, and the family's limit and refresh are
the largest non-zero among them (0 is unlimited there too). Families poolgate
does not serve (Gemini, Mistral, ...) are left out and listed in the answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from accounts.legacy_families import poolgate_family
from accounts.schema import token_hash
from accounts.users import (
    MAX_NICKNAME_CHARS,
    MAX_NOTE_CHARS,
    MAX_REASON_CHARS,
    USER_TYPES,
    UserBook,
    UserInputError,
    UserRecord,
    checked_count,
    checked_email,
    checked_text,
    new_user_id,
    token_hint,
    user_view,
)

EXPORT_FORMAT = "poolgate-users"
EXPORT_VERSION = 1
MAX_IMPORT_USERS = 100_000
_USER_ID = re.compile(r"^[0-9a-f]{16}$")
_TOKEN_HASH = re.compile(r"^[0-9a-f]{64}$")

_OWN_FIELDS = {
    "id", "token_hash", "token_hint", "nickname", "type", "created_at", "last_used_at", "expires_at", "prompt_count",
    "disabled_at", "disabled_reason", "note", "max_ips", "public", "ips", "quotas", "meta",
    "email", "signin", "login", "session_gen", "spend",
}
_MONTH = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")


def _spend(fields: dict[str, str]) -> dict[str, dict[str, int]]:
    """What the user spent per budget month (micro-dollars) and how many requests: a restore keeps budgets whole."""
    months = {name.partition(":")[2] for name in fields if name.startswith(("cost:", "requests:"))}
    return {month: {"cost_micro": int(fields.get(f"cost:{month}", 0)),
                    "requests": int(fields.get(f"requests:{month}", 0))}
            for month in sorted(months) if _MONTH.match(month)}


class ImportProblem(ValueError):
    """A record that cannot be imported: which one (0-based), which field, and why."""

    def __init__(self, index: int, field_name: str, message: str) -> None:
        super().__init__(f"users[{index}].{field_name}: {message}")
        self.index = index
        self.field = field_name


@dataclass
class ImportPlan:
    """Checked records ready to write; ids of OAI Reverse Proxy users are assigned once the store is asked."""

    records: list[UserRecord] = field(default_factory=list)
    legacy: list[bool] = field(default_factory=list)  # per record: came with a plaintext token
    ignored_families: set[str] = field(default_factory=set)


def export_document(records: list[UserRecord], families: tuple[str, ...]) -> dict[str, Any]:
    """poolgate's export: every user as the admin API shows it, plus its token hash (see the module docstring)."""
    users = [{**user_view(fields, ips, families), "token_hash": fields["token_hash"], "spend": _spend(fields)}
             for fields, ips in records]
    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "users": users}


def read_import(document: Any, families: tuple[str, ...], now_ms: int) -> ImportPlan:
    """Check every record of an import; ImportProblem names the first bad one. Nothing is written here."""
    users = document.get("users") if isinstance(document, dict) else document
    if not isinstance(users, list):
        raise ImportProblem(0, "users", "expected a JSON list of users, or an object with a \"users\" list")
    if len(users) > MAX_IMPORT_USERS:
        raise ImportProblem(MAX_IMPORT_USERS, "users", f"at most {MAX_IMPORT_USERS} users per import")
    plan = ImportPlan()
    seen_hashes: dict[str, int] = {}
    seen_ids: dict[str, int] = {}
    for index, raw in enumerate(users):
        try:
            if not isinstance(raw, dict):
                raise UserInputError("(record)", "must be a JSON object")
            if ("token" in raw) == ("token_hash" in raw):
                raise UserInputError("token", "a record needs exactly one of token (OAI Reverse Proxy) or token_hash")
            legacy = "token" in raw
            record = _read_legacy(raw, families, now_ms, plan) if legacy else _read_own(raw, families)
        except UserInputError as problem:
            raise ImportProblem(index, problem.field, problem.message) from None
        fields = record[0]
        if fields["token_hash"] in seen_hashes:
            raise ImportProblem(index, "token", f"the same token as users[{seen_hashes[fields['token_hash']]}]")
        seen_hashes[fields["token_hash"]] = index
        if not legacy:
            if fields["id"] in seen_ids:
                raise ImportProblem(index, "id", f"the same id as users[{seen_ids[fields['id']]}]")
            seen_ids[fields["id"]] = index
        plan.records.append(record)
        plan.legacy.append(legacy)
    return plan


async def apply_import(book: UserBook, plan: ImportPlan) -> dict[str, Any]:
    """Give each OAI Reverse Proxy user its id (the existing user with its token, else a new one), then write all.

    A poolgate record whose token hash belongs to another user in the store is refused, with nothing written.
    """
    owners = await book.owners_of([fields["token_hash"] for fields, _ in plan.records])
    for index, ((fields, _), legacy, owner) in enumerate(zip(plan.records, plan.legacy, owners, strict=True)):
        if legacy:
            fields["id"] = owner or new_user_id()
        elif owner is not None and owner != fields["id"]:
            raise ImportProblem(index, "token_hash", "belongs to another user in this store")
    replaced = await book.replace(plan.records) if plan.records else 0
    return {
        "imported": len(plan.records),
        "replaced": replaced,
        "ignored_families": sorted(plan.ignored_families),
    }


def _read_legacy(raw: dict[str, Any], families: tuple[str, ...], now_ms: int, plan: ImportPlan) -> UserRecord:
    token = checked_text("token", raw["token"], 500)
    if not token.strip():
        raise UserInputError("token", "is empty")
    kind = raw.get("type", "normal")
    if kind not in USER_TYPES:
        raise UserInputError("type", f"must be one of {', '.join(USER_TYPES)}")
    created = _whole(raw, "createdAt") or now_ms
    fields: dict[str, str] = {
        "token_hash": token_hash(token), "token_hint": token_hint(token), "type": kind, "created_at": str(created),
        "last_used_at": str(_whole(raw, "lastUsedAt")), "expires_at": str(_whole(raw, "expiresAt")),
        "prompt_count": str(_whole(raw, "promptCount")),
    }
    if kind == "temporary" and fields["expires_at"] == "0":
        raise UserInputError("expiresAt", "a temporary user needs expiresAt")
    _optional_text(raw, "nickname", MAX_NICKNAME_CHARS, fields, "nickname")
    _optional_text(raw, "adminNote", MAX_NOTE_CHARS, fields, "note")
    _optional_text(raw, "disabledReason", MAX_REASON_CHARS, fields, "disabled_reason")
    if raw.get("disabledAt") is not None:
        fields["disabled_at"] = str(_whole(raw, "disabledAt"))
    if raw.get("maxIps") is not None:
        max_ips = raw["maxIps"]
        if isinstance(max_ips, str) and max_ips.isdigit():  # the legacy proxy coerced strings
            max_ips = int(max_ips)
        fields["max_ips"] = str(checked_count("maxIps", max_ips))
    _legacy_quotas(raw, families, fields, plan)
    if raw.get("meta") is not None:
        if not isinstance(raw["meta"], dict):
            raise UserInputError("meta", "must be an object")
        fields["meta"] = json.dumps(raw["meta"])
    ips = raw.get("ip", [])
    if not isinstance(ips, list):
        raise UserInputError("ip", "must be a list of addresses")
    addresses = [checked_text(f"ip[{n}]", address, 100) for n, address in enumerate(ips)]
    # When each address was first seen is not exported; a millisecond apart from creation keeps their order.
    return fields, [(address, created + n) for n, address in enumerate(dict.fromkeys(addresses))]


def _legacy_quotas(raw: dict[str, Any], families: tuple[str, ...], fields: dict[str, str], plan: ImportPlan) -> None:
    # Counts of families that map to one poolgate family add up; limits and refresh amounts take the largest.
    for source in ("tokenCounts", "tokenLimits", "tokenRefresh"):
        table = raw.get(source) or {}
        if not isinstance(table, dict):
            raise UserInputError(source, "must be an object of model family -> tokens")
        for legacy_name, value in table.items():
            family = poolgate_family(str(legacy_name), families)
            if family is None:
                plan.ignored_families.add(str(legacy_name)[:40])
                continue
            where = f"{source}.{legacy_name}"
            total, input_, output = _legacy_amount(where, value)
            if source == "tokenCounts":
                for name, amount in (("used", total), ("input", input_), ("output", output)):
                    key = f"{name}:{family}"
                    fields[key] = str(int(fields.get(key, "0")) + amount)
            else:
                key = f"{'quota' if source == 'tokenLimits' else 'refresh'}:{family}"
                fields[key] = str(max(int(fields.get(key, "0")), total))


def _legacy_amount(where: str, value: Any) -> tuple[int, int, int]:
    """(total, input, output) of one family's entry: a number (older versions) or {input, output, legacy_total}."""
    if value is None:
        return 0, 0, 0
    if isinstance(value, dict):
        input_ = _number(f"{where}.input", value.get("input", 0))
        output = _number(f"{where}.output", value.get("output", 0))
        legacy_total = _number(f"{where}.legacy_total", value.get("legacy_total", 0))
        return max(input_ + output, legacy_total), input_, output
    total = _number(where, value)
    return total, 0, 0


def _read_own(raw: dict[str, Any], families: tuple[str, ...]) -> UserRecord:
    for name in raw:
        if name not in _OWN_FIELDS:
            raise UserInputError(str(name)[:40], "is not a field of poolgate's user export")
    user_id, hashed = raw.get("id"), raw.get("token_hash")
    if not isinstance(user_id, str) or not _USER_ID.match(user_id):
        raise UserInputError("id", "must be 16 hex digits, as poolgate's export writes it")
    if not isinstance(hashed, str) or not _TOKEN_HASH.match(hashed):
        raise UserInputError("token_hash", "must be 64 hex digits (a sha256)")
    kind = raw.get("type", "normal")
    if kind not in USER_TYPES:
        raise UserInputError("type", f"must be one of {', '.join(USER_TYPES)}")
    fields: dict[str, str] = {"id": user_id, "token_hash": hashed, "type": kind}
    hint = raw.get("token_hint") or ""
    fields["token_hint"] = checked_text("token_hint", hint, 8).removeprefix("...")
    for name in ("created_at", "last_used_at", "expires_at", "prompt_count"):
        fields[name] = str(_whole(raw, name))
    if kind == "temporary" and fields["expires_at"] == "0":
        raise UserInputError("expires_at", "a temporary user needs expires_at")
    _optional_text(raw, "nickname", MAX_NICKNAME_CHARS, fields, "nickname")
    _optional_text(raw, "note", MAX_NOTE_CHARS, fields, "note")
    _optional_text(raw, "disabled_reason", MAX_REASON_CHARS, fields, "disabled_reason")
    if raw.get("email") is not None:
        fields["email"] = checked_email(raw["email"])
    for name in ("signin", "login"):  # how a signed-in person finds this user again
        _optional_text(raw, name, 500, fields, name)
    for name in ("disabled_at", "max_ips", "session_gen"):
        if raw.get(name) is not None:
            fields[name] = str(checked_count(name, raw[name]))
    if raw.get("public") not in (None, True, False):
        raise UserInputError("public", "must be true or false")
    if raw.get("public"):
        fields["public"] = "1"
    quotas = raw.get("quotas") or {}
    if not isinstance(quotas, dict):
        raise UserInputError("quotas", "must be an object of model family -> {limit, used, refresh, input, output}")
    for family, entry in quotas.items():
        if family not in families:
            raise UserInputError(f"quotas.{str(family)[:40]}", "is not a model family")
        if not isinstance(entry, dict):
            raise UserInputError(f"quotas.{family}", "must be an object {limit, used, refresh, input, output}")
        for part, name in (("limit", "quota"), ("used", "used"), ("input", "input"), ("output", "output")):
            fields[f"{name}:{family}"] = str(checked_count(f"quotas.{family}.{part}", entry.get(part, 0)))
        if entry.get("refresh") is not None:
            fields[f"refresh:{family}"] = str(checked_count(f"quotas.{family}.refresh", entry["refresh"]))
    spend = raw.get("spend") or {}
    if not isinstance(spend, dict):
        raise UserInputError("spend", "must be an object of YYYY-MM -> {cost_micro, requests}")
    for month, entry in spend.items():
        if not _MONTH.match(str(month)) or not isinstance(entry, dict):
            raise UserInputError(f"spend.{str(month)[:20]}", "must be YYYY-MM -> {cost_micro, requests}")
        fields[f"cost:{month}"] = str(checked_count(f"spend.{month}.cost_micro", entry.get("cost_micro", 0)))
        fields[f"requests:{month}"] = str(checked_count(f"spend.{month}.requests", entry.get("requests", 0)))
    if raw.get("meta") is not None:
        if not isinstance(raw["meta"], dict):
            raise UserInputError("meta", "must be an object")
        fields["meta"] = json.dumps(raw["meta"])
    ips = raw.get("ips") or []
    if not isinstance(ips, list):
        raise UserInputError("ips", "must be a list of {address, first_seen_at}")
    seen: list[tuple[str, int]] = []
    for n, entry in enumerate(ips):
        if not isinstance(entry, dict):
            raise UserInputError(f"ips[{n}]", "must be an object {address, first_seen_at}")
        seen.append((checked_text(f"ips[{n}].address", entry.get("address"), 100),
                     checked_count(f"ips[{n}].first_seen_at", entry.get("first_seen_at", 0))))
    return fields, seen


def _optional_text(raw: dict[str, Any], name: str, limit: int, fields: dict[str, str], store_as: str) -> None:
    if raw.get(name) is not None:
        fields[store_as] = checked_text(name, raw[name], limit)


def _whole(raw: dict[str, Any], name: str) -> int:
    return 0 if raw.get(name) is None else _number(name, raw[name])


def _number(name: str, value: Any) -> int:
    # JavaScript wrote these: a float like 1700000000000.0 is a whole number too.
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != value:
        raise UserInputError(name, "must be a number, 0 or more")
    if value == float("inf"):
        raise UserInputError(name, "must be a finite number")
    return int(value)
