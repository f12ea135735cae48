"""The usage report: bucketed, grouped usage read from the rollup tables, never from raw rows.

Shaped like OpenAI's organization Usage API: a page of time buckets, each with one result
per group; `limit` buckets per page (1m: 60 by default, at most 1,440; 1h: 24, at most
168; 1d: 7, at most 31) and an opaque `next_page` cursor. Buckets are aligned to UTC
minute/hour/day boundaries: `start_time` rounds down and `end_time` up to the bucket width,
and every bucket of the page is listed, an empty one with no results.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import connection, models
from django.db.models import Aggregate, JSONField, Model, Sum

from tenants.models import Tenant
from usage import histograms
from usage.models import TenantUsageDay, TenantUsageHour, UsageDay, UsageHour, UsageMinute

GROUPS = ("tenant", "api_key", "model", "app")
_GROUP_COLUMNS = {"tenant": "tenant_id", "api_key": "api_key_id", "model": "model", "app": "app"}
PARAMS = frozenset(
    {
        "start_time",
        "end_time",
        "bucket_width",
        "group_by",
        "tenants",
        "models",
        "apps",
        "api_key_ids",
        "limit",
        "page",
        "format",
    }
)


@dataclass(frozen=True, slots=True)
class BucketWidth:
    name: str
    seconds: int
    model: type[models.Model]
    time_field: str
    default_limit: int
    max_limit: int
    max_export_days: int  # the longest range one export may walk at this width
    tenant_model: type[models.Model] | None = None  # per-tenant rollups, where kept


WIDTHS = {
    "1m": BucketWidth("1m", 60, UsageMinute, "minute", 60, 1440, 31),
    "1h": BucketWidth("1h", 3600, UsageHour, "hour", 24, 168, 400, TenantUsageHour),
    "1d": BucketWidth("1d", 86400, UsageDay, "day", 7, 31, 36_600, TenantUsageDay),
}


class QueryError(Exception):
    """Bad parameters: `errors` maps each offending parameter to what is wrong with it."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


@dataclass(frozen=True, slots=True)
class UsageQuery:
    start: int  # Unix seconds, on a bucket boundary
    end: int  # Unix seconds, on a bucket boundary, > start
    width: BucketWidth
    group_by: tuple[str, ...]
    tenant_ids: tuple[int, ...] | None  # None: every tenant the caller may see
    models: tuple[str, ...] | None
    apps: tuple[str, ...] | None
    api_key_ids: tuple[int, ...] | None
    limit: int
    page_start: int  # the first bucket of the page asked for

    @property
    def page_end(self) -> int:
        return min(self.end, self.page_start + self.limit * self.width.seconds)

    @property
    def per_tenant_model(self) -> type[Model] | None:  # `models` is a field here
        """The per-tenant rollup table that answers this query row for row, if one does:
        grouped by tenant alone, with no other filter, at a width that keeps one."""
        filtered = self.models or self.apps or self.api_key_ids
        return None if self.group_by != ("tenant",) or filtered else self.width.tenant_model

    def whole_range(self) -> Iterator[UsageQuery]:
        """The pages of the range that hold rows, each as large as the width allows (for
        exports). An empty stretch costs one query, however long: the next page starts at
        the next stored bucket."""
        page_start = self.start
        while page_start < self.end:
            first = first_stored(self, page_start)
            if first is None:
                return
            query = replace(self, page_start=first, limit=self.width.max_limit)
            yield query
            page_start = query.page_end

    def check_exportable(self) -> None:
        """Refuse a range longer than one export may walk at this width (QueryError)."""
        days = self.width.max_export_days
        if self.end - self.start > days * 86_400:
            raise QueryError(
                {
                    "end_time": [
                        f"With bucket_width={self.width.name} an export covers at most {days:,} "
                        "days; shorten the range or use a wider bucket."
                    ]
                }
            )


# -- parsing ---------------------------------------------------------------------------------


def parse_query(
    params: Mapping[str, Any],
    *,
    now: int,
    tenant_ids: Sequence[int] | None,
    allowed_params: frozenset[str] = PARAMS,
) -> UsageQuery:
    """Validate the query string. `tenant_ids` are those already resolved from `tenants=`
    (the caller knows who may see which tenant); raises QueryError naming every bad field."""
    errors: dict[str, list[str]] = {}
    for name in sorted(set(params) - allowed_params):
        errors[name] = [f"Unknown parameter; the known ones are: {', '.join(sorted(PARAMS))}."]
    for name in sorted(set(params) & allowed_params):
        if any("\x00" in value for value in _raw(params, name)):
            errors[name] = ["Contains a NUL character."]
    width_name = _text(params, "bucket_width") or "1d"
    width = WIDTHS.get(width_name)
    if width is None:
        errors["bucket_width"] = [f"Use one of {', '.join(WIDTHS)}; got {width_name!r}."]
        width = WIDTHS["1d"]
    start = _unix(params, "start_time", errors, required=True)
    end = _unix(params, "end_time", errors, required=False)
    if end is None:
        end = now
    if start is not None and end is not None and end <= start:
        errors.setdefault("end_time", []).append("end_time must be after start_time.")
    group_by = tuple(_listed(params, "group_by"))
    if bad := [g for g in group_by if g not in GROUPS]:
        errors["group_by"] = [f"Unknown group {bad[0]!r}; group by any of {', '.join(GROUPS)}."]
    limit = _limit(params, width, errors)
    key_ids = _int_list(params, "api_key_ids", errors)
    if errors or start is None:
        raise QueryError(errors)
    first = start // width.seconds * width.seconds
    last = math.ceil(end / width.seconds) * width.seconds
    page_start = _page(params, first, last, width, errors)
    if errors:
        raise QueryError(errors)
    return UsageQuery(
        start=first,
        end=last,
        width=width,
        group_by=tuple(g for g in GROUPS if g in group_by),
        tenant_ids=None if tenant_ids is None else tuple(tenant_ids),
        models=_optional(params, "models"),
        apps=_optional(params, "apps"),
        api_key_ids=key_ids,
        limit=limit,
        page_start=page_start,
    )


def listed(params: Mapping[str, Any], name: str) -> list[str]:
    """A list parameter, given comma-separated, repeated (`a=x&a=y`) or as `a[]=x`."""
    return _listed(params, name)


def _raw(params: Mapping[str, Any], name: str) -> list[str]:
    getlist = getattr(params, "getlist", None)
    if getlist is not None:
        return [str(v) for v in [*getlist(name), *getlist(name + "[]")]]
    value = params.get(name)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def _listed(params: Mapping[str, Any], name: str) -> list[str]:
    return [part.strip() for raw in _raw(params, name) for part in raw.split(",") if part.strip()]


def _text(params: Mapping[str, Any], name: str) -> str | None:
    values = _raw(params, name)
    return values[-1].strip() if values else None


def _optional(params: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    values = _listed(params, name)
    return tuple(values) if values else None


def _unix(
    params: Mapping[str, Any], name: str, errors: dict[str, list[str]], *, required: bool
) -> int | None:
    text = _text(params, name)
    if text is None or text == "":
        if required:
            errors[name] = ["Required: a Unix time in seconds, e.g. 1763942400."]
        return None
    if not _whole_number(text):
        errors[name] = [f"Expected a Unix time in whole seconds (>= 0); got {text[:40]!r}."]
        return None
    value = int(text)
    if value > 253_402_300_799:  # 9999-12-31: beyond it datetimes overflow
        errors[name] = ["Too far in the future."]
        return None
    return value


def _limit(params: Mapping[str, Any], width: BucketWidth, errors: dict[str, list[str]]) -> int:
    text = _text(params, "limit")
    if text is None:
        return width.default_limit
    if not _whole_number(text) or not 1 <= int(text) <= width.max_limit:
        errors["limit"] = [
            f"With bucket_width={width.name}, limit is 1 to {width.max_limit} buckets; "
            f"got {text[:40]!r}."
        ]
        return width.default_limit
    return int(text)


def _whole_number(text: str) -> bool:
    """ASCII digits, few enough for int(): str.isdigit() also accepts '²' and '٣', which
    int() refuses, and int() refuses strings of over 4,300 digits."""
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


def _int_list(
    params: Mapping[str, Any], name: str, errors: dict[str, list[str]]
) -> tuple[int, ...] | None:
    values = _listed(params, name)
    if not values:
        return None
    if bad := [v for v in values if not _whole_number(v)]:
        errors[name] = [f"Expected ids (whole numbers); got {bad[0][:40]!r}."]
        return None
    return tuple(int(v) for v in values)


def encode_page(page_start: int) -> str:
    return base64.urlsafe_b64encode(f"p1:{page_start}".encode()).decode().rstrip("=")


def _page(
    params: Mapping[str, Any],
    first: int,
    last: int,
    width: BucketWidth,
    errors: dict[str, list[str]],
) -> int:
    token = _text(params, "page")
    if not token:
        return first
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        tag, _, value = decoded.partition(":")
        page_start = int(value)
        if tag != "p1":
            raise ValueError(tag)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        errors["page"] = ["Not a page cursor: pass the next_page value of the previous page."]
        return first
    if not first <= page_start < last or (page_start - first) % width.seconds:
        errors["page"] = ["This cursor belongs to another range: keep the other parameters."]
        return first
    return page_start


# -- the query ------------------------------------------------------------------------------


class MergeHistograms(Aggregate):
    """Collects a group's histograms (JSON), to be merged bucket by bucket in Python."""

    function = "jsonb_agg"
    output_field = JSONField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return super().as_sql(
            compiler,
            connection,
            function="json_group_array",
            template="%(function)s(json(%(expressions)s))",
            **extra,
        )


def _utc(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


_SUMS = {
    "n": "num_requests",
    "aborted": "num_aborted",
    "errors": "num_errors",
    "input": "prompt_tokens",
    "cached": "cached_tokens",
    "output": "output_tokens",
    "kv_blocks": "kv_block_seconds",
    "kv_gib": "kv_gib_seconds",
    "preempted": "preemptions",
}
_PERCENTILES = ("ttft_p50_ms", "ttft_p95_ms", "latency_p95_ms")
GIB_SECONDS_PLACES = Decimal("1e-9")


def grouped_rows(query: UsageQuery) -> list[dict[str, Any]]:
    """The page's results as rows, summed per (bucket, group), in bucket then group order.

    Where every group is one stored row, the rows are read as they are, percentiles
    included: per tenant (no other filter) from the per-tenant tables, and grouped by every
    dimension from the keyed ones. Any other grouping sums rows and merges histograms.
    """
    width = query.width
    time_field = width.time_field
    if (per_tenant := query.per_tenant_model) is not None:
        return _stored_rows(query, per_tenant, [time_field, "tenant_id"])
    columns = [time_field, *(_GROUP_COLUMNS[g] for g in query.group_by)]
    if query.group_by == GROUPS:
        return _stored_rows(query, width.model, columns)
    return list(
        _in_page(query, width.model)
        .values(*columns)
        .annotate(
            **{alias: Sum(name) for alias, name in _SUMS.items()},
            ttft_hists=MergeHistograms("ttft_hist"),
            latency_hists=MergeHistograms("latency_hist"),
        )
        .order_by(*columns)
    )


def first_stored(query: UsageQuery, after: int) -> int | None:
    """The first bucket at or after `after` (and before the range's end) holding a row the
    query selects, or None: one indexed query."""
    rest = replace(query, page_start=after, limit=(query.end - after) // query.width.seconds + 1)
    model = query.per_tenant_model or query.width.model
    time_field = query.width.time_field
    first = _in_page(rest, model).order_by(time_field).values_list(time_field, flat=True).first()
    return None if first is None else int(first.timestamp())


def _in_page(query: UsageQuery, model: type[models.Model]) -> models.QuerySet[Any]:
    time_field = query.width.time_field
    rows = model._default_manager.filter(
        **{
            f"{time_field}__gte": _utc(query.page_start),
            f"{time_field}__lt": _utc(query.page_end),
        }
    )
    if query.tenant_ids is not None:
        rows = rows.filter(tenant_id__in=query.tenant_ids)
    if query.models is not None:
        rows = rows.filter(model__in=query.models)
    if query.apps is not None:
        rows = rows.filter(app__in=query.apps)
    if query.api_key_ids is not None:
        rows = rows.filter(api_key_id__in=query.api_key_ids)
    return rows


def _stored_rows(
    query: UsageQuery, model: type[models.Model], columns: list[str]
) -> list[dict[str, Any]]:
    names = [*columns, *_SUMS.values(), *_PERCENTILES]
    aliases = [*columns, *_SUMS, *_PERCENTILES]
    rows = _in_page(query, model).order_by(*columns).values_list(*names)
    return [dict(zip(aliases, row, strict=True)) for row in rows]


def _percentiles(row: Mapping[str, Any]) -> tuple[float | None, float | None, float | None]:
    if "ttft_hists" not in row:  # one stored row: its percentiles are columns
        return row["ttft_p50_ms"], row["ttft_p95_ms"], row["latency_p95_ms"]
    ttft = histograms.merged(row["ttft_hists"] or ())
    latency = histograms.merged(row["latency_hists"] or ())
    ttft_p50, ttft_p95 = histograms.quantiles(ttft, (0.5, 0.95))
    return ttft_p50, ttft_p95, histograms.quantile(latency, 0.95)


def _three_places(value: float | None) -> float:
    # Half away from zero, as PostgreSQL's round(numeric) in `rendered_page`.
    exact = Decimal(repr(value or 0.0))
    return float(exact.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


def result_of(
    row: Mapping[str, Any], group_by: tuple[str, ...], slugs: Mapping[int, str]
) -> dict[str, Any]:
    """One group's result in the API's shape; fields not grouped by are null."""
    ttft_p50, ttft_p95, latency_p95 = _percentiles(row)
    key_id = row.get("api_key_id")
    kv_gib = row["kv_gib"]
    return {
        "object": "usage.result",
        "tenant": slugs.get(row["tenant_id"]) if "tenant" in group_by else None,
        "api_key_id": (key_id or None) if "api_key" in group_by else None,
        "model": row["model"] if "model" in group_by else None,
        "app": row["app"] if "app" in group_by else None,
        "num_requests": row["n"],
        "num_aborted": row["aborted"],
        "num_errors": row["errors"],
        "input_tokens": row["input"],
        "input_cached_tokens": row["cached"],
        "output_tokens": row["output"],
        "kv_block_seconds": _three_places(row["kv_blocks"]),
        # At the column's scale, whatever scale the database's SUM came back with.
        "kv_gib_seconds": str(Decimal(kv_gib or 0).quantize(GIB_SECONDS_PLACES)),
        "ttft_p50_ms": ttft_p50,
        "ttft_p95_ms": ttft_p95,
        "latency_p95_ms": latency_p95,
        "preemptions": row["preempted"],
    }


def tenant_slugs(rows: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    ids = {row["tenant_id"] for row in rows if "tenant_id" in row}
    return dict(Tenant.objects.filter(id__in=ids).values_list("id", "slug")) if ids else {}


def bucketed(query: UsageQuery) -> list[dict[str, Any]]:
    """Every bucket of the page, each with its results (empty buckets included)."""
    seconds = query.width.seconds
    buckets: dict[int, dict[str, Any]] = {
        start: {"object": "bucket", "start_time": start, "end_time": start + seconds, "results": []}
        for start in range(query.page_start, query.page_end, seconds)
    }
    rows = grouped_rows(query)
    slugs = tenant_slugs(rows)
    for row in rows:
        start = int(row[query.width.time_field].timestamp())
        buckets[start]["results"].append(result_of(row, query.group_by, slugs))
    return list(buckets.values())


def rendered_page(query: UsageQuery) -> str:
    """The page as JSON text.

    Usage per tenant per hour or day is the report dashboards poll and the one with the most
    results (a page holds up to 24 x 1,000 of them). On PostgreSQL its JSON text is written
    by the database, straight from the per-tenant rollup rows: building a dict per result
    and encoding it in Python cost several times more, and so did PostgreSQL's own JSON
    constructors. Everything else goes through `page` and the JSON encoder; the tests check
    that both give the same document.
    """
    width = query.width
    per_tenant = query.per_tenant_model
    if per_tenant is None or connection.vendor != "postgresql":
        return json.dumps(page(query), separators=(",", ":"))
    results = _tenant_results_json(query, per_tenant)
    buckets = ",".join(
        f'{{"object":"bucket","start_time":{start},"end_time":{start + width.seconds},'
        f'"results":[{results.get(start, "")}]}}'
        for start in range(query.page_start, query.page_end, width.seconds)
    )
    has_more = query.page_end < query.end
    next_page = json.dumps(encode_page(query.page_end)) if has_more else "null"
    return (
        f'{{"object":"page","data":[{buckets}],"has_more":{json.dumps(has_more)},'
        f'"next_page":{next_page}}}'
    )


# One result, field for field what `result_of` builds (the tests compare the two documents).
_RESULT_TEMPLATE = (
    '{"object":"usage.result","tenant":%s,"api_key_id":null,"model":null,"app":null,'
    '"num_requests":%s,"num_aborted":%s,"num_errors":%s,"input_tokens":%s,'
    '"input_cached_tokens":%s,"output_tokens":%s,"kv_block_seconds":%s,'
    '"kv_gib_seconds":"%s","ttft_p50_ms":%s,"ttft_p95_ms":%s,"latency_p95_ms":%s,'
    '"preemptions":%s}'
)


def _tenant_results_json(query: UsageQuery, model: type[models.Model]) -> dict[int, str]:
    """{bucket start: its results as comma-separated JSON objects}, written by PostgreSQL's
    format() and string_agg(): one string per bucket crosses the wire, not a row per result
    (fetching the rows and formatting them here took three times longer)."""
    quote = connection.ops.quote_name
    time = "r." + quote(query.width.time_field)
    where = [f"{time} >= %s", f"{time} < %s"]
    params: list[Any] = [_RESULT_TEMPLATE, _utc(query.page_start), _utc(query.page_end)]
    if query.tenant_ids is not None:
        where.append("r.tenant_id = ANY(%s)")
        params.append(list(query.tenant_ids))

    def number(column: str) -> str:
        return f"coalesce(r.{column}::text, 'null')"

    sql = (
        f"SELECT extract(epoch FROM {time})::bigint, string_agg(format(%s, to_json(t.slug), "
        "r.num_requests, r.num_aborted, r.num_errors, r.prompt_tokens, r.cached_tokens, "
        "r.output_tokens, round(r.kv_block_seconds::numeric, 3), r.kv_gib_seconds, "
        f"{number('ttft_p50_ms')}, {number('ttft_p95_ms')}, {number('latency_p95_ms')}, "
        "r.preemptions), ',' ORDER BY r.tenant_id) "
        f"FROM {quote(model._meta.db_table)} AS r "
        f"JOIN {quote(Tenant._meta.db_table)} AS t ON t.id = r.tenant_id "
        f"WHERE {' AND '.join(where)} GROUP BY 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {int(start): results for start, results in cursor.fetchall()}


def page(query: UsageQuery) -> dict[str, Any]:
    has_more = query.page_end < query.end
    return {
        "object": "page",
        "data": bucketed(query),
        "has_more": has_more,
        "next_page": encode_page(query.page_end) if has_more else None,
    }
