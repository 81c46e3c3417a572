"""`AsyncClient`: typed, asynchronous access to every endpoint, with retries and chunking."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, TypeVar, cast

import httpx2 as httpx

from signalscore_client import _calls as c
from signalscore_client import models as m
from signalscore_client._calls import UNSET, BodyFormat, Call
from signalscore_client.client import _headers, request_kwargs, resolve_config
from signalscore_client.errors import TransportError, error_for
from signalscore_client.retry import RetryPolicy, was_sent

T = TypeVar("T")


class AsyncClient:
    """An asynchronous client (asyncio), with the methods of `Client` as coroutines and
    async iterators. `base_url` and `api_key` default to `SIGNALSCORE_URL` and
    `SIGNALSCORE_API_KEY`. Use it as an async context manager, or await `aclose()`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url, self.api_key = resolve_config(base_url, api_key)
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_headers(self.api_key),
            timeout=timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: Call[T]) -> T:
        kwargs = request_kwargs(call)
        retry = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, **kwargs)
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
            await asyncio.sleep(delay)
            retry += 1

    # --- service ------------------------------------------------------------------------

    async def health(self) -> m.Health:
        return await self._send(c.health())

    async def ready(self) -> m.Readiness:
        return await self._send(c.ready())

    async def organization(self) -> m.Organization:
        return await self._send(c.organization())

    # --- profiles, rules ----------------------------------------------------------------

    async def list_profiles(self) -> list[m.Profile]:
        return await self._send(c.list_profiles())

    async def create_profile(
        self,
        profile_type: m.ObjectType,
        name: str,
        *,
        description: str | None = UNSET,
        tiers: m.TiersSpec | None = UNSET,
    ) -> m.Profile:
        """Not idempotent: never retried once it may have reached the server."""
        return await self._send(c.create_profile(profile_type, name, description, tiers))

    async def get_profile(self, profile_id: str) -> m.Profile:
        return await self._send(c.get_profile(profile_id))

    async def update_profile(
        self,
        profile_id: str,
        name: str,
        *,
        description: str | None = UNSET,
        tiers: m.TiersSpec | None = UNSET,
    ) -> m.Profile:
        """Omitted `description` / `tiers` are kept; `None` clears them."""
        return await self._send(c.update_profile(profile_id, name, description, tiers))

    async def delete_profile(self, profile_id: str) -> None:
        await self._send(c.delete_profile(profile_id))

    async def list_rules(self, profile_id: str) -> list[m.Rule]:
        return await self._send(c.list_rules(profile_id))

    async def put_rule(
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
        return await self._send(
            c.put_rule(profile_id, signal_template_id, dimension, answer_type, point_values, decay)
        )

    async def delete_rule(self, profile_id: str, rule_id: str) -> None:
        await self._send(c.delete_rule(profile_id, rule_id))

    # --- ranked reads and distributions -------------------------------------------------

    async def list_ranked_scores(
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
        return await self._send(
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

    async def iter_ranked_scores(
        self,
        profile_id: str,
        dimension: m.Dimension,
        *,
        tier: str | None = None,
        min_score: float | None = None,
        max_score: float | None = None,
        order: m.Order | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[m.ScoreRow]:
        """Every ranked row, page after page (following `nextCursor`)."""
        cursor: str | None = None
        while True:
            page = await self.list_ranked_scores(
                profile_id,
                dimension,
                tier=tier,
                min_score=min_score,
                max_score=max_score,
                order=order,
                limit=page_size,
                cursor=cursor,
            )
            for item in page["data"]:
                yield item
            cursor = page["nextCursor"]
            if cursor is None:
                return

    async def get_distribution(
        self, profile_id: str, dimension: m.Dimension, *, buckets: int | None = None
    ) -> m.Distribution:
        return await self._send(c.get_distribution(profile_id, dimension, buckets))

    async def preview_profile(
        self,
        profile_id: str,
        rules: list[m.RuleUpsert],
        *,
        tiers: m.TiersSpec | None = UNSET,
        sample_size: int | None = None,
    ) -> m.Preview:
        """What `rules` (the complete set) and `tiers` (omitted: the current ones; `None`:
        none) would do to the profile's scores (SPEC §12). Changes nothing."""
        return await self._send(c.preview_profile(profile_id, rules, tiers, sample_size))

    # --- assignments, scores, compute ---------------------------------------------------

    async def list_assignments(
        self, object_type: m.ObjectType, object_id: str
    ) -> list[m.Assignment]:
        return await self._send(c.list_assignments(object_type, object_id))

    async def create_assignment(
        self, profile_id: str, object_type: m.ObjectType, object_id: str
    ) -> m.Assignment:
        return await self._send(c.create_assignment(profile_id, object_type, object_id))

    async def assign_bulk(
        self, profile_id: str, object_type: m.ObjectType, object_ids: Iterable[str]
    ) -> list[m.Assignment]:
        """Any number of ids, sent 500 per call (each call atomic); the new assignments."""
        created: list[m.Assignment] = []
        for batch in c.chunks(object_ids, c.OBJECT_IDS_PER_CALL):
            created.extend(await self._send(c.assign_bulk(profile_id, object_type, batch)))
        return created

    async def import_assignments(
        self,
        profile_id: str,
        body: bytes | str,
        *,
        format: BodyFormat = "csv",
        timeout: float | None = None,
    ) -> m.AssignmentsImportResult:
        """One `POST /assignments/import` of a whole CSV or NDJSON body (all or nothing)."""
        data = body.encode() if isinstance(body, str) else body
        return await self._send(c.import_assignments(profile_id, data, format, timeout))

    async def delete_assignment(self, assignment_id: str) -> None:
        await self._send(c.delete_assignment(assignment_id))

    async def get_scores(
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
            rows.extend(await self._send(c.get_scores(object_type, batch, profile_id, dimension)))
        return rows

    async def compute(
        self, object_type: m.ObjectType, object_ids: Iterable[str]
    ) -> m.ComputeAccepted:
        """Queue any number of objects, 500 per call; the counts added up."""
        total: dict[str, int] = {"queued": 0, "failed": 0}
        for batch in c.chunks(object_ids, c.OBJECT_IDS_PER_CALL):
            c.add_counts(total, dict(await self._send(c.compute(object_type, batch))))
        return cast(m.ComputeAccepted, total)

    async def compute_status(self) -> m.ComputeStatus:
        return await self._send(c.compute_status())

    async def wait_idle(self, timeout: float = 300.0, poll: float = 0.2) -> None:
        """Until `GET /compute/status` shows nothing pending or running."""
        deadline = time.monotonic() + timeout
        while True:
            status = await self.compute_status()
            if status["pending"] == 0 and status["running"] == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"scores still computing after {timeout} s: {status}")
            await asyncio.sleep(poll)

    # --- signals ------------------------------------------------------------------------

    async def list_templates(self, object_type: m.ObjectType | None = None) -> list[m.Template]:
        return await self._send(c.list_templates(object_type))

    async def create_template(
        self,
        name: str,
        object_type: m.ObjectType,
        answer_type: m.AnswerType,
        *,
        id: str | None = None,
        description: str | None = UNSET,
    ) -> m.Template:
        """Not idempotent: never retried once it may have reached the server."""
        return await self._send(c.create_template(name, object_type, answer_type, id, description))

    async def get_template(self, template_id: str) -> m.Template:
        return await self._send(c.get_template(template_id))

    async def update_template(
        self, template_id: str, *, name: str = UNSET, description: str | None = UNSET
    ) -> m.Template:
        return await self._send(c.update_template(template_id, name, description))

    async def delete_template(self, template_id: str) -> None:
        await self._send(c.delete_template(template_id))

    async def put_values(self, values: Iterable[m.SignalValueIn]) -> m.SignalValuesWriteResult:
        """Write any number of values, 1000 per call (each call atomic, in order, so the
        last item still wins for a repeated key); the counts added up over the calls."""
        total: dict[str, int] = {"written": 0, "deleted": 0, "unchanged": 0}
        for batch in c.chunks(values, c.VALUES_PER_CALL):
            c.add_counts(total, dict(await self._send(c.put_values(batch))))
        return cast(m.SignalValuesWriteResult, total)

    async def import_values(
        self, body: bytes | str, *, format: BodyFormat = "ndjson", timeout: float | None = None
    ) -> m.SignalValuesImportResult:
        """One `POST /values/import` of a whole CSV or NDJSON body (all or nothing)."""
        data = body.encode() if isinstance(body, str) else body
        return await self._send(c.import_values(data, format, timeout))

    async def get_values(
        self, object_type: m.ObjectType, object_ids: Iterable[str]
    ) -> list[m.SignalValue]:
        """Values of any number of objects (asked 100 per call), in the ids' order."""
        rows: list[m.SignalValue] = []
        for batch in c.chunks(object_ids, c.READ_IDS_PER_CALL):
            rows.extend(await self._send(c.get_values(object_type, batch)))
        return rows

    # --- events and history (SPEC §10) --------------------------------------------------

    async def list_events(
        self,
        *,
        after: int | None = None,
        types: Sequence[str] | None = None,
        profile_id: str | None = None,
        limit: int | None = None,
    ) -> m.EventPage:
        return await self._send(c.list_events(after, types, profile_id, limit))

    async def iter_events(
        self,
        *,
        after: int = 0,
        types: Sequence[str] | None = None,
        profile_id: str | None = None,
        page_size: int = 1000,
        follow: bool = False,
        poll_interval: float = 1.0,
    ) -> AsyncIterator[m.Event]:
        """Every event after sequence `after`, in order. With `follow`, waits for new ones
        forever (polling every `poll_interval` seconds when caught up)."""
        while True:
            page = await self.list_events(
                after=after, types=types, profile_id=profile_id, limit=page_size
            )
            for item in page["data"]:
                yield item
            after = page["nextAfter"]
            if len(page["data"]) < page_size:
                if not follow:
                    return
                await asyncio.sleep(poll_interval)

    async def get_history(
        self,
        object_type: m.ObjectType,
        object_id: str,
        *,
        profile_id: str | None = None,
        dimension: m.Dimension | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> m.HistoryPage:
        return await self._send(
            c.get_history(object_type, object_id, profile_id, dimension, limit, cursor)
        )

    async def iter_history(
        self,
        object_type: m.ObjectType,
        object_id: str,
        *,
        profile_id: str | None = None,
        dimension: m.Dimension | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[m.Event]:
        cursor: str | None = None
        while True:
            page = await self.get_history(
                object_type,
                object_id,
                profile_id=profile_id,
                dimension=dimension,
                limit=page_size,
                cursor=cursor,
            )
            for item in page["data"]:
                yield item
            cursor = page["nextCursor"]
            if cursor is None:
                return

    # --- webhooks (SPEC §11) ------------------------------------------------------------

    async def create_webhook(
        self,
        url: str,
        event_types: Sequence[str],
        *,
        profile_ids: Sequence[str] | None = UNSET,
        description: str | None = UNSET,
    ) -> m.WebhookWithSecret:
        """Subscribe `url`; the answer is the only one with the `secret` (`whsec_...`) to
        give `verify_webhook`. Not idempotent: never retried once it may have been sent."""
        return await self._send(c.create_webhook(url, event_types, profile_ids, description))

    async def list_webhooks(self) -> list[m.Webhook]:
        return await self._send(c.list_webhooks())

    async def get_webhook(self, webhook_id: str) -> m.Webhook:
        return await self._send(c.get_webhook(webhook_id))

    async def update_webhook(
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
        return await self._send(c.update_webhook(webhook_id, changes))

    async def delete_webhook(self, webhook_id: str) -> None:
        await self._send(c.delete_webhook(webhook_id))

    async def rotate_webhook_secret(self, webhook_id: str) -> m.WebhookWithSecret:
        return await self._send(c.rotate_webhook_secret(webhook_id))

    async def test_webhook(self, webhook_id: str) -> m.Delivery:
        """Deliver one `webhook.test` event now; the attempt's outcome."""
        return await self._send(c.test_webhook(webhook_id))

    async def list_webhook_deliveries(
        self, webhook_id: str, *, limit: int | None = None
    ) -> list[m.Delivery]:
        """The delivery attempts, newest first."""
        return await self._send(c.list_webhook_deliveries(webhook_id, limit))
