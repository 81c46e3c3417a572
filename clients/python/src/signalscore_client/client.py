"""`Client`: typed, synchronous access to every endpoint, with retries and chunking."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar, cast

import httpx2 as httpx

from signalscore_client import _calls as c
from signalscore_client import models as m
from signalscore_client._calls import UNSET, BodyFormat, Call
from signalscore_client.errors import TransportError, error_for
from signalscore_client.retry import RetryPolicy, was_sent

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "signalscore-client/0.1.0"


def resolve_config(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """Flags first, then `SIGNALSCORE_URL` / `SIGNALSCORE_API_KEY`, then the default URL."""
    url = base_url or os.environ.get("SIGNALSCORE_URL") or DEFAULT_URL
    key = api_key or os.environ.get("SIGNALSCORE_API_KEY") or None
    return url.rstrip("/"), key


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"user-agent": USER_AGENT, "accept": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def request_kwargs(call: Call[Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"params": call.params or None}
    if call.json is not None:
        kwargs["json"] = call.json
    if call.content is not None:
        kwargs["content"] = call.content
        kwargs["headers"] = {"content-type": call.content_type or "application/octet-stream"}
    if call.timeout is not None:
        kwargs["timeout"] = call.timeout
    return kwargs


class Client:
    """A synchronous client. `base_url` and `api_key` default to `SIGNALSCORE_URL` and
    `SIGNALSCORE_API_KEY`. Use it as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url, self.api_key = resolve_config(base_url, api_key)
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=_headers(self.api_key),
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call[T]) -> T:
        kwargs = request_kwargs(call)
        retry = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, **kwargs)
            except httpx.TransportError as exc:
                delay = self.retry.delay_for_error(exc, retry, idempotent=call.idempotent)
                if delay is None:
                    raise TransportError(
                        f"{call.method} {call.path}: {type(exc).__name__}: {exc}",
                        sent=was_sent(exc),
                        cause=exc,
                    ) from exc
            else:
                if response.is_success:
                    return cast(T, None if call.empty else response.json())
                delay = self.retry.delay_for(response, retry)
                if delay is None:
                    raise error_for(response)
            time.sleep(delay)
            retry += 1

    # --- service ------------------------------------------------------------------------

    def health(self) -> m.Health:
        return self._send(c.health())

    def ready(self) -> m.Readiness:
        return self._send(c.ready())

    def organization(self) -> m.Organization:
        return self._send(c.organization())

    # --- profiles, rules ----------------------------------------------------------------

    def list_profiles(self) -> list[m.Profile]:
        return self._send(c.list_profiles())

    def create_profile(
        self,
        profile_type: m.ObjectType,
        name: str,
        *,
        description: str | None = UNSET,
        tiers: m.TiersSpec | None = UNSET,
    ) -> m.Profile:
        """Not idempotent: never retried once it may have reached the server."""
        return self._send(c.create_profile(profile_type, name, description, tiers))

    def get_profile(self, profile_id: str) -> m.Profile:
        return self._send(c.get_profile(profile_id))

    def update_profile(
        self,
        profile_id: str,
        name: str,
        *,
        description: str | None = UNSET,
        tiers: m.TiersSpec | None = UNSET,
    ) -> m.Profile:
        """Omitted `description` / `tiers` are kept; `None` clears them."""
        return self._send(c.update_profile(profile_id, name, description, tiers))

    def delete_profile(self, profile_id: str) -> None:
        self._send(c.delete_profile(profile_id))

    def list_rules(self, profile_id: str) -> list[m.Rule]:
        return self._send(c.list_rules(profile_id))

    def put_rule(
        self,
        profile_id: str,
        signal_template_id: str,
        dimension: m.Dimension,
        answer_type: m.AnswerType,
        point_values: dict[str, Any],
        *,
        decay: m.Decay | None = None,
    ) -> m.Rule:
        """Create or replace the rule; without `decay` the rule has none (SPEC §13)."""
        return self._send(
            c.put_rule(profile_id, signal_template_id, dimension, answer_type, point_values, decay)
        )

    def delete_rule(self, profile_id: str, rule_id: str) -> None:
        self._send(c.delete_rule(profile_id, rule_id))

    # --- ranked reads and distributions -------------------------------------------------

    def list_ranked_scores(
        self,
        profile_id: str,
        dimension: m.Dimension,
        *,
        tier: str | None = None,
        min_score: float | None = None,
        max_score: float | None = None,
        order: m.Order | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> m.ScorePage:
        """One page of the profile's ranked rows; see `iter_ranked_scores` for all of them."""
        return self._send(
            c.list_ranked_scores(
                profile_id,
                dimension,
                tier=tier,
                min_score=min_score,
                max_score=max_score,
                order=order,
                limit=limit,
                cursor=cursor,
            )
        )

    def iter_ranked_scores(
        self,
        profile_id: str,
        dimension: m.Dimension,
        *,
        tier: str | None = None,
        min_score: float | None = None,
        max_score: float | None = None,
        order: m.Order | None = None,
        page_size: int = 1000,
    ) -> Iterator[m.ScoreRow]:
        """Every ranked row, page after page (following `nextCursor`)."""
        cursor: str | None = None
        while True:
            page = self.list_ranked_scores(
                profile_id,
                dimension,
                tier=tier,
                min_score=min_score,
                max_score=max_score,
                order=order,
                limit=page_size,
                cursor=cursor,
            )
            yield from page["data"]
            cursor = page["nextCursor"]
            if cursor is None:
                return

    def get_distribution(
        self, profile_id: str, dimension: m.Dimension, *, buckets: int | None = None
    ) -> m.Distribution:
        return self._send(c.get_distribution(profile_id, dimension, buckets))

    def preview_profile(
        self,
        profile_id: str,
        rules: list[m.RuleUpsert],
        *,
        tiers: m.TiersSpec | None = UNSET,
        sample_size: int | None = None,
    ) -> m.Preview:
        """What `rules` (the complete set) and `tiers` (omitted: the current ones; `None`:
        none) would do to the profile's scores (SPEC §12). Changes nothing."""
        return self._send(c.preview_profile(profile_id, rules, tiers, sample_size))

    # --- assignments, scores, compute ---------------------------------------------------

    def list_assignments(self, object_type: m.ObjectType, object_id: str) -> list[m.Assignment]:
        return self._send(c.list_assignments(object_type, object_id))

    def create_assignment(
        self, profile_id: str, object_type: m.ObjectType, object_id: str
    ) -> m.Assignment:
        return self._send(c.create_assignment(profile_id, object_type, object_id))

    def assign_bulk(
        self, profile_id: str, object_type: m.ObjectType, object_ids: Iterable[str]
    ) -> list[m.Assignment]:
        """Any number of ids, sent 500 per call (each call atomic); the new assignments."""
        created: list[m.Assignment] = []
        for batch in c.chunks(object_ids, c.OBJECT_IDS_PER_CALL):
            created.extend(self._send(c.assign_bulk(profile_id, object_type, batch)))
        return created

    def import_assignments(
        self,
        profile_id: str,
        body: bytes | str,
        *,
        format: BodyFormat = "csv",
        timeout: float | None = None,
    ) -> m.AssignmentsImportResult:
        """One `POST /assignments/import` of a whole CSV or NDJSON body (all or nothing)."""
        data = body.encode() if isinstance(body, str) else body
        return self._send(c.import_assignments(profile_id, data, format, timeout))

    def delete_assignment(self, assignment_id: str) -> None:
        self._send(c.delete_assignment(assignment_id))

    def get_scores(
        self,
        object_type: m.ObjectType,
        object_ids: Iterable[str],
        *,
        profile_id: str | None = None,
        dimension: m.Dimension | None = None,
    ) -> list[m.ScoreRow]:
        """Score rows of any number of objects (asked 100 per call), in the ids' order."""
        rows: list[m.ScoreRow] = []
        for batch in c.chunks(object_ids, c.READ_IDS_PER_CALL):
            rows.extend(self._send(c.get_scores(object_type, batch, profile_id, dimension)))
        return rows

    def compute(self, object_type: m.ObjectType, object_ids: Iterable[str]) -> m.ComputeAccepted:
        """Queue any number of objects, 500 per call; the counts added up."""
        total: dict[str, int] = {"queued": 0, "failed": 0}
        for batch in c.chunks(object_ids, c.OBJECT_IDS_PER_CALL):
            c.add_counts(total, dict(self._send(c.compute(object_type, batch))))
        return cast(m.ComputeAccepted, total)

    def compute_status(self) -> m.ComputeStatus:
        return self._send(c.compute_status())

    def wait_idle(self, timeout: float = 300.0, poll: float = 0.2) -> None:
        """Until `GET /compute/status` shows nothing pending or running."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.compute_status()
            if status["pending"] == 0 and status["running"] == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"scores still computing after {timeout} s: {status}")
            time.sleep(poll)

    # --- signals ------------------------------------------------------------------------

    def list_templates(self, object_type: m.ObjectType | None = None) -> list[m.Template]:
        return self._send(c.list_templates(object_type))

    def create_template(
        self,
        name: str,
        object_type: m.ObjectType,
        answer_type: m.AnswerType,
        *,
        id: str | None = None,
        description: str | None = UNSET,
    ) -> m.Template:
        """Not idempotent: never retried once it may have reached the server."""
        return self._send(c.create_template(name, object_type, answer_type, id, description))

    def get_template(self, template_id: str) -> m.Template:
        return self._send(c.get_template(template_id))

    def update_template(
        self, template_id: str, *, name: str = UNSET, description: str | None = UNSET
    ) -> m.Template:
        return self._send(c.update_template(template_id, name, description))

    def delete_template(self, template_id: str) -> None:
        self._send(c.delete_template(template_id))

    def put_values(self, values: Iterable[m.SignalValueIn]) -> m.SignalValuesWriteResult:
        """Write any number of values, 1000 per call (each call atomic, in order, so the
        last item still wins for a repeated key); the counts added up over the calls."""
        total: dict[str, int] = {"written": 0, "deleted": 0, "unchanged": 0}
        for batch in c.chunks(values, c.VALUES_PER_CALL):
            c.add_counts(total, dict(self._send(c.put_values(batch))))
        return cast(m.SignalValuesWriteResult, total)

    def import_values(
        self, body: bytes | str, *, format: BodyFormat = "ndjson", timeout: float | None = None
    ) -> m.SignalValuesImportResult:
        """One `POST /values/import` of a whole CSV or NDJSON body (all or nothing)."""
        data = body.encode() if isinstance(body, str) else body
        return self._send(c.import_values(data, format, timeout))

    def get_values(
        self, object_type: m.ObjectType, object_ids: Iterable[str]
    ) -> list[m.SignalValue]:
        """Values of any number of objects (asked 100 per call), in the ids' order."""
        rows: list[m.SignalValue] = []
        for batch in c.chunks(object_ids, c.READ_IDS_PER_CALL):
            rows.extend(self._send(c.get_values(object_type, batch)))
        return rows

    # --- events and history (SPEC §10) --------------------------------------------------

    def list_events(
        self,
        *,
        after: int | None = None,
        types: Sequence[str] | None = None,
        profile_id: str | None = None,
        limit: int | None = None,
    ) -> m.EventPage:
        return self._send(c.list_events(after, types, profile_id, limit))

    def iter_events(
        self,
        *,
        after: int = 0,
        types: Sequence[str] | None = None,
        profile_id: str | None = None,
        page_size: int = 1000,
        follow: bool = False,
        poll_interval: float = 1.0,
    ) -> Iterator[m.Event]:
        """Every event after sequence `after`, in order. With `follow`, waits for new ones
        forever (polling every `poll_interval` seconds when caught up)."""
        while True:
            page = self.list_events(
                after=after, types=types, profile_id=profile_id, limit=page_size
            )
            yield from page["data"]
            after = page["nextAfter"]
            if len(page["data"]) < page_size:
                if not follow:
                    return
                time.sleep(poll_interval)

    def get_history(
        self,
        object_type: m.ObjectType,
        object_id: str,
        *,
        profile_id: str | None = None,
        dimension: m.Dimension | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> m.HistoryPage:
        return self._send(
            c.get_history(object_type, object_id, profile_id, dimension, limit, cursor)
        )

    def iter_history(
        self,
        object_type: m.ObjectType,
        object_id: str,
        *,
        profile_id: str | None = None,
        dimension: m.Dimension | None = None,
        page_size: int = 100,
    ) -> Iterator[m.Event]:
        cursor: str | None = None
        while True:
            page = self.get_history(
                object_type,
                object_id,
                profile_id=profile_id,
                dimension=dimension,
                limit=page_size,
                cursor=cursor,
            )
            yield from page["data"]
            cursor = page["nextCursor"]
            if cursor is None:
                return

    # --- webhooks (SPEC §11) ------------------------------------------------------------

    def create_webhook(
        self,
        url: str,
        event_types: Sequence[str],
        *,
        profile_ids: Sequence[str] | None = UNSET,
        description: str | None = UNSET,
    ) -> m.WebhookWithSecret:
        """Subscribe `url`; the answer is the only one with the `secret` (`whsec_...`) to
        give `verify_webhook`. Not idempotent: never retried once it may have been sent."""
        return self._send(c.create_webhook(url, event_types, profile_ids, description))

    def list_webhooks(self) -> list[m.Webhook]:
        return self._send(c.list_webhooks())

    def get_webhook(self, webhook_id: str) -> m.Webhook:
        return self._send(c.get_webhook(webhook_id))

    def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str = UNSET,
        event_types: Sequence[str] = UNSET,
        profile_ids: Sequence[str] | None = UNSET,
        description: str | None = UNSET,
        enabled: bool = UNSET,
    ) -> m.Webhook:
        """Only the arguments given change; `enabled=True` resumes a disabled one."""
        changes = {
            "url": url,
            "eventTypes": event_types if event_types is UNSET else list(event_types),
            "profileIds": profile_ids
            if profile_ids is UNSET or profile_ids is None
            else list(profile_ids),
            "description": description,
            "enabled": enabled,
        }
        return self._send(c.update_webhook(webhook_id, changes))

    def delete_webhook(self, webhook_id: str) -> None:
        self._send(c.delete_webhook(webhook_id))

    def rotate_webhook_secret(self, webhook_id: str) -> m.WebhookWithSecret:
        return self._send(c.rotate_webhook_secret(webhook_id))

    def test_webhook(self, webhook_id: str) -> m.Delivery:
        """Deliver one `webhook.test` event now; the attempt's outcome."""
        return self._send(c.test_webhook(webhook_id))

    def list_webhook_deliveries(
        self, webhook_id: str, *, limit: int | None = None
    ) -> list[m.Delivery]:
        """The delivery attempts, newest first."""
        return self._send(c.list_webhook_deliveries(webhook_id, limit))
