"""`signalscore demo`: a realistic sample organisation to explore the API with.

Deterministic (seeded), so the README's walkthrough shows the same companies every time.
Everything goes through the same service functions as the HTTP API, in one transaction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.assignments.service import assign_many
from signalscore.auth import service as auth_service
from signalscore.db.engine import take_organization_lock
from signalscore.db.tables import organizations, signal_templates
from signalscore.profiles.schemas import ProfileCreate
from signalscore.profiles.service import create_profile
from signalscore.rules.schemas import RuleUpsert
from signalscore.rules.service import upsert_rule
from signalscore.signals.schemas import SignalValueIn, TemplateCreate
from signalscore.signals.service import create_template, write_values

TEMPLATES: list[tuple[str, str, str]] = [
    ("demo.employees", "Headcount", "number"),
    ("demo.industry", "Industry", "list"),
    ("demo.crm", "CRM in use", "list"),
    ("demo.b2b", "Sells to businesses", "boolean"),
    ("demo.funding_usd", "Total funding (USD)", "currency"),
    ("demo.tech", "Tech stack", "list"),
    ("demo.hiring_sales", "Hiring for sales roles", "boolean"),
    ("demo.traffic_growth", "Web traffic growth, 90 days (%)", "percentage"),
    ("demo.recent_funding", "Raised in the last 6 months", "boolean"),
]

RULES: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "demo.employees",
        "fit",
        "number",
        {
            "ranges": [
                {"max": 50, "points": 2},
                {"min": 50, "max": 200, "points": 10},
                {"min": 200, "max": 1000, "points": 20},
                {"min": 1000, "points": 25},
            ]
        },
    ),
    (
        "demo.industry",
        "fit",
        "list",
        {
            "mode": "best-match",
            "choices": {
                "Software": 20,
                "Fintech": 18,
                "E-commerce": 12,
                "Healthcare": 8,
                "Retail": 4,
            },
        },
    ),
    (
        "demo.crm",
        "fit",
        "list",
        {"mode": "best-match", "choices": {"Salesforce": 15, "HubSpot": 12, "Pipedrive": 6}},
    ),
    ("demo.b2b", "fit", "boolean", {"true": 15, "false": -10}),
    (
        "demo.funding_usd",
        "fit",
        "currency",
        {
            "ranges": [
                {"max": 1_000_000, "points": 0},
                {"min": 1_000_000, "max": 20_000_000, "points": 8},
                {"min": 20_000_000, "points": 15},
            ]
        },
    ),
    ("demo.tech", "fit", "list", {"mode": "contains-none", "choices": {"In-house CRM": 5}}),
    ("demo.hiring_sales", "urgency", "boolean", {"true": 30}),
    (
        "demo.traffic_growth",
        "urgency",
        "percentage",
        {
            "ranges": [
                {"max": 5, "points": 0},
                {"min": 5, "max": 25, "points": 15},
                {"min": 25, "points": 30},
            ]
        },
    ),
    ("demo.recent_funding", "urgency", "boolean", {"true": 25, "false": 0}),
    (
        "demo.tech",
        "urgency",
        "list",
        {"mode": "additive", "choices": {"Segment": 5, "Snowflake": 5, "dbt": 5}},
    ),
]

_FIRST = [
    "acme",
    "globex",
    "initech",
    "umbrella",
    "stark",
    "wayne",
    "tyrell",
    "hooli",
    "pied",
    "vandelay",
    "soylent",
    "cyberdyne",
    "aperture",
    "wonka",
    "oscorp",
    "nakatomi",
    "gringotts",
    "monarch",
    "zephyr",
    "quantum",
    "lumen",
    "nimbus",
    "vertex",
    "orbit",
]
_SECOND = [
    "labs",
    "works",
    "systems",
    "cloud",
    "data",
    "ai",
    "io",
    "hq",
    "group",
    "soft",
    "analytics",
    "pay",
    "health",
    "retail",
    "logistics",
    "media",
]
_TLDS = ["com", "io", "co", "ai", "de", "co.uk", "fr", "net"]


@dataclass
class DemoResult:
    organization_id: str
    api_key: str | None
    profile_id: str
    companies: list[str]

    def summary(self) -> str:
        lines = [
            f"Loaded the demo into organisation {self.organization_id}:",
            f"  {len(TEMPLATES)} signal templates, profile {self.profile_id} with "
            f"{len(RULES)} rules, {len(self.companies)} companies assigned and queued.",
            f"  Example companies: {', '.join(self.companies[:3])}",
        ]
        if self.api_key:
            lines.append(f"  New organisation; its API key (shown once): {self.api_key}")
        lines.append(
            "  Scores appear within seconds while `signalscore serve` (or a worker) runs:\n"
            f"  curl -H 'Authorization: Bearer $KEY' "
            f"'http://127.0.0.1:8000/v1/scoring/scores?objectType=company&objectId="
            f"{self.companies[0]}'"
        )
        return "\n".join(lines)


def company_domains(count: int, rng: random.Random) -> list[str]:
    domains: dict[str, None] = {}
    while len(domains) < count:
        name = f"{rng.choice(_FIRST)}{rng.choice(_SECOND)}"
        if rng.random() < 0.5:
            name += str(rng.randint(1, 999))
        domains[f"{name}.{rng.choice(_TLDS)}"] = None
    return list(domains)


def company_values(domain: str, rng: random.Random) -> list[SignalValueIn]:
    candidates: dict[str, Any] = {
        "demo.employees": int(rng.lognormvariate(4.5, 1.5)),
        "demo.industry": rng.sample(
            ["Software", "Fintech", "E-commerce", "Healthcare", "Retail", "Manufacturing"],
            rng.randint(1, 2),
        ),
        "demo.crm": rng.sample(["Salesforce", "HubSpot", "Pipedrive", "In-house CRM"], 1),
        "demo.b2b": rng.random() < 0.7,
        "demo.funding_usd": round(rng.lognormvariate(15, 2), 2),
        "demo.tech": rng.sample(
            ["Segment", "Snowflake", "dbt", "In-house CRM", "Zapier", "Stripe"], rng.randint(0, 4)
        ),
        "demo.hiring_sales": rng.random() < 0.3,
        "demo.traffic_growth": round(min(100.0, max(0.0, rng.gauss(10, 12))), 1),
        "demo.recent_funding": rng.random() < 0.15,
    }
    return [
        SignalValueIn(
            objectType="company", objectId=domain, signalTemplateId=template_id, value=value
        )
        for template_id, value in candidates.items()
        if rng.random() < 0.8  # about 80% of signals known, as in real data
    ]


def _organization(conn: Connection, org_id: str | None) -> tuple[str, str | None]:
    if org_id is not None:
        if auth_service.get_organization(conn, org_id) is None:
            raise LookupError(f"no organisation with id {org_id!r}")
        return org_id, None
    first = conn.execute(
        sa.select(organizations.c.id).order_by(organizations.c.created_at).limit(1)
    ).scalar_one_or_none()
    if first is not None:
        return first, None
    org, issued = auth_service.create_organization(conn, "Default organization")
    return org.id, issued.key


def load_demo(conn: Connection, *, org_id: str | None = None, companies: int = 1000) -> DemoResult:
    org_id, new_key = _organization(conn, org_id)
    take_organization_lock(conn, org_id)
    rng = random.Random(42)
    existing = set(
        conn.execute(
            sa.select(signal_templates.c.id).where(signal_templates.c.organization_id == org_id)
        ).scalars()
    )
    for template_id, name, answer_type in TEMPLATES:
        if template_id not in existing:
            create_template(
                conn,
                org_id,
                TemplateCreate(
                    id=template_id, name=name, objectType="company", answerType=answer_type
                ),
            )
    profile = create_profile(
        conn,
        org_id,
        ProfileCreate(
            profileType="company",
            name="Demo: B2B SaaS ICP",
            description="Loaded by `signalscore demo`",
        ),
    )
    for template_id, dimension, answer_type, point_values in RULES:
        upsert_rule(
            conn,
            org_id,
            profile.id,
            RuleUpsert(
                signalTemplateId=template_id,
                dimension=dimension,
                answerType=answer_type,
                pointValues=point_values,
            ),
        )
    domains = company_domains(companies, rng)
    batch: list[SignalValueIn] = []
    for domain in domains:
        batch.extend(company_values(domain, rng))
        if len(batch) >= 900:
            write_values(conn, org_id, batch)
            batch = []
    if batch:
        write_values(conn, org_id, batch)
    for start in range(0, len(domains), 500):
        assign_many(conn, org_id, profile.id, "company", domains[start : start + 500])
    return DemoResult(org_id, new_key, str(profile.id), domains)
