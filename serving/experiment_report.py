"""An experiment's report: per arm, the lists served, what users did with them, and the CTR
difference between arms, read from the impression log and the feedback log (the real event log).

An event counts for an arm when its request id names a list the impression log holds for that
experiment; an event id counts once. CTR is the share of lists with at least one click, with a
Wilson 95% interval; the difference (treatment minus control) has Newcombe's interval, built from
the two Wilson intervals. In shadow mode every list shown is the control's: `shadow_hits` counts
the treatment-arm lists with a click on an item the treatment's unseen list also held.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

from serving.experiments import ARMS, Experiment, Experiments

Z95 = 1.959963984540054

REPORT_SQL = """
with impressions as (
    select request_id, any_value(arm) as arm, any_value(shadow_items) as shadow_items
    from read_json($impressions, format = 'newline_delimited', ignore_errors = true, columns = {
        request_id: 'varchar', arm: 'varchar', shadow_items: 'varchar[]'
    })
    where request_id is not null
    group by request_id
),
events as (
    select distinct on (event_id) event_id, request_id, event_type, item_id
    from read_json($feedback, format = 'newline_delimited', ignore_errors = true, columns = {
        event_id: 'varchar', request_id: 'varchar', event_type: 'varchar', item_id: 'varchar'
    })
    where request_id is not null
),
lists as (
    select
        i.arm,
        count(e.event_id) filter (where e.event_type = 'click') as clicks,
        count(e.event_id) filter (where e.event_type = 'add_to_cart') as add_to_carts,
        count(e.event_id) filter (where e.event_type = 'purchase') as purchases,
        coalesce(bool_or(e.event_type = 'click' and list_contains(i.shadow_items, e.item_id)), false) as shadow_hit
    from impressions as i left join events as e on i.request_id = e.request_id
    group by i.request_id, i.arm
)
select
    arm,
    count(*) as requests,
    count(*) filter (where clicks > 0) as requests_clicked,
    sum(clicks)::bigint as clicks,
    sum(add_to_carts)::bigint as add_to_carts,
    sum(purchases)::bigint as purchases,
    count(*) filter (where shadow_hit) as shadow_hits
from lists
group by arm
"""


@dataclass(frozen=True)
class ArmResult:
    arm: str
    version: str
    requests: int
    requests_clicked: int
    clicks: int
    add_to_carts: int
    purchases: int
    shadow_hits: int
    ctr: float
    ctr_low: float
    ctr_high: float


@dataclass(frozen=True)
class Report:
    experiment: Experiment
    running: bool
    arms: list[ArmResult]
    difference: dict[str, float | None]  # ctr, low, high: treatment minus control

    def rows(self) -> list[dict[str, str]]:
        """The report as a table, a row per arm and one for the difference (CLI and Prefect artifact)."""
        rows = []
        for a in self.arms:
            row = {
                "arm": a.arm,
                "version": a.version,
                "requests": f"{a.requests:,}",
                "clicks": f"{a.clicks:,}",
                "add to carts": f"{a.add_to_carts:,}",
                "purchases": f"{a.purchases:,}",
                "CTR [95% CI]": f"{a.ctr:.4f} [{a.ctr_low:.4f}, {a.ctr_high:.4f}]",
            }
            if self.experiment.shadow:
                row["shadow hits"] = f"{a.shadow_hits:,}"
            rows.append(row)
        d = self.difference
        gap = "n/a" if d["ctr"] is None else f"{d['ctr']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
        rows.append(dict.fromkeys(rows[0], "") | {"arm": "treatment - control", "CTR [95% CI]": gap})
        return rows

    def as_dict(self) -> dict:
        return {
            "experiment": asdict(self.experiment),
            "running": self.running,
            "arms": [asdict(a) for a in self.arms],
            "difference": self.difference,
        }


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """The rate and its Wilson score interval; (0, 0, 1) without trials."""
    if n == 0:
        return 0.0, 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return p, max(0.0, centre - half), min(1.0, centre + half)


def newcombe(control: ArmResult, treatment: ArmResult) -> dict[str, float | None]:
    """Treatment minus control CTR with Newcombe's hybrid score interval (method 10)."""
    if not control.requests or not treatment.requests:
        return {"ctr": None, "low": None, "high": None}
    p1, l1, u1 = control.ctr, control.ctr_low, control.ctr_high
    p2, l2, u2 = treatment.ctr, treatment.ctr_low, treatment.ctr_high
    d = p2 - p1
    return {
        "ctr": d,
        "low": d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2),
        "high": d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2),
    }


def experiment_report(experiments: Experiments, feedback_dir: Path, experiment_id: str | None = None) -> Report:
    """The report of that experiment, or of the running one (else the last one)."""
    experiment = experiments.get(experiment_id)
    impressions_dir = experiments.impressions_dir(experiment.id)
    rows = {}
    impression_files = sorted(str(p) for p in impressions_dir.glob("*.jsonl")) if impressions_dir.is_dir() else []
    feedback_files = sorted(str(p) for p in feedback_dir.glob("*.jsonl"))
    if impression_files and feedback_files:
        with duckdb.connect() as con:
            result = con.execute(REPORT_SQL, {"impressions": impression_files, "feedback": feedback_files})
            columns = [d[0] for d in result.description]
            rows = {row[0]: dict(zip(columns, row)) for row in result.fetchall()}
    arms = []
    for arm in ARMS:
        row = rows.get(arm) or {"requests": 0, "requests_clicked": 0}
        ctr, low, high = wilson(row["requests_clicked"], row["requests"])
        arms.append(
            ArmResult(
                arm=arm,
                version=experiment.version(arm),  # in shadow mode the treatment's, scored but not shown
                requests=row["requests"],
                requests_clicked=row["requests_clicked"],
                clicks=row.get("clicks", 0),
                add_to_carts=row.get("add_to_carts", 0),
                purchases=row.get("purchases", 0),
                shadow_hits=row.get("shadow_hits", 0),
                ctr=ctr,
                ctr_low=low,
                ctr_high=high,
            )
        )
    return Report(experiment, experiments.current() == experiment, arms, newcombe(*arms))
