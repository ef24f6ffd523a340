"""An experiment's report: per arm, the lists served, what users did with them, and the CTR
difference between arms, read from the impression log and the feedback log (the real event log).

An event counts for an arm when its request id names a list the impression log holds for that
experiment; an event id counts once. CTR is clicks per list shown, as on `/metrics`. Users, not
lists, are what is randomised, and one user's lists are not independent trials: the 95% intervals
come from the delta method over per-user sums (a ratio estimator clustered by user), for each arm
and for the difference (treatment minus control). In shadow mode every list shown is the
control's: the treatment's figure is its shadow hits per list (clicks on items its unseen list
also held), which favours the control, so no difference is given.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import numpy as np

from model.experiments import ARMS, Experiment, Experiments

Z95 = 1.959963984540054

EVENTS_FROM_LOG = """
    select distinct on (event_id) event_id, request_id, event_type, item_id
    from read_json($feedback, format = 'newline_delimited', ignore_errors = true, columns = {
        event_id: 'varchar', request_id: 'varchar', event_type: 'varchar', item_id: 'varchar',
        received_at: 'timestamptz'
    })
    where request_id is not null and received_at >= $started_at::timestamptz
"""
NO_EVENTS = (
    "select null::varchar as event_id, null::varchar as request_id, null::varchar as event_type, "
    "null::varchar as item_id where false"
)

REPORT_SQL = """
with impressions as (
    select request_id, any_value(arm) as arm, any_value(user_key) as user_key, any_value(shadow_items) as shadow_items
    from read_json($impressions, format = 'newline_delimited', ignore_errors = true, columns = {
        request_id: 'varchar', arm: 'varchar', user_key: 'varchar', shadow_items: 'varchar[]'
    })
    where request_id is not null
    group by request_id
),
events as ({events}),
lists as (
    select
        i.arm,
        i.user_key,
        count(e.event_id) filter (where e.event_type = 'click') as clicks,
        count(e.event_id) filter (where e.event_type = 'add_to_cart') as add_to_carts,
        count(e.event_id) filter (where e.event_type = 'purchase') as purchases,
        count(e.event_id) filter (where e.event_type = 'click' and list_contains(i.shadow_items, e.item_id))
            as shadow_hits
    from impressions as i left join events as e on i.request_id = e.request_id
    group by i.request_id, i.arm, i.user_key
)
select
    arm,
    user_key,
    count(*) as lists,
    sum(clicks)::bigint as clicks,
    sum(add_to_carts)::bigint as add_to_carts,
    sum(purchases)::bigint as purchases,
    sum(shadow_hits)::bigint as shadow_hits
from lists
group by arm, user_key
"""


@dataclass(frozen=True)
class ArmResult:
    arm: str
    version: str
    users: int
    requests: int
    clicks: int
    add_to_carts: int
    purchases: int
    shadow_hits: int
    ctr: float
    ctr_low: float
    ctr_high: float
    variance: float  # of the CTR estimate, for the difference


@dataclass(frozen=True)
class Report:
    experiment: Experiment
    running: bool
    arms: list[ArmResult]
    difference: dict[str, float | None]  # ctr, low, high: treatment minus control

    def rows(self) -> list[dict[str, str]]:
        """The report as a table, a row per arm and one for the difference (CLI and Prefect artifact)."""
        shadow = self.experiment.shadow
        rows = []
        for a in self.arms:
            row = {
                "arm": a.arm + (" (shadow)" if shadow and a.arm == "treatment" else ""),
                "version": a.version,
                "users": f"{a.users:,}",
                "requests": f"{a.requests:,}",
                "clicks": f"{a.clicks:,}",
                "add to carts": f"{a.add_to_carts:,}",
                "purchases": f"{a.purchases:,}",
                "CTR [95% CI]": f"{a.ctr:.4f} [{a.ctr_low:.4f}, {a.ctr_high:.4f}]",
            }
            if shadow:
                row["shadow hits"] = f"{a.shadow_hits:,}"
            rows.append(row)
        d = self.difference
        if d["ctr"] is not None:
            gap = f"{d['ctr']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
            rows.append(dict.fromkeys(rows[0], "") | {"arm": "treatment - control", "CTR [95% CI]": gap})
        return rows

    def as_dict(self) -> dict:
        experiment = asdict(self.experiment)
        experiment.pop("salt")
        return {
            "experiment": experiment,
            "running": self.running,
            "arms": [_finite(asdict(a)) for a in self.arms],
            "difference": _finite(self.difference),
        }


def _finite(values: dict) -> dict:
    """JSON has no infinity: an interval without enough users to bound it is null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}


def ratio_estimate(numerators: np.ndarray, denominators: np.ndarray) -> tuple[float, float]:
    """Sum(numerators) / sum(denominators) over users, and the delta-method variance of that ratio."""
    total = denominators.sum()
    users = len(denominators)
    if users == 0 or total == 0:
        return 0.0, math.inf
    ratio = numerators.sum() / total
    if users < 2:
        return ratio, math.inf
    residuals = numerators - ratio * denominators
    return ratio, float((residuals**2).sum() / total**2 * users / (users - 1))


def _arm(arm: str, version: str, per_user: dict[str, np.ndarray], shadow: bool) -> ArmResult:
    lists = per_user["lists"]
    hits = per_user["shadow_hits"] if shadow else per_user["clicks"]
    ctr, variance = ratio_estimate(hits, lists)
    half = Z95 * math.sqrt(variance)
    return ArmResult(
        arm=arm,
        version=version,
        users=len(lists),
        requests=int(lists.sum()),
        clicks=int(per_user["clicks"].sum()),
        add_to_carts=int(per_user["add_to_carts"].sum()),
        purchases=int(per_user["purchases"].sum()),
        shadow_hits=int(per_user["shadow_hits"].sum()),
        ctr=float(ctr),
        ctr_low=max(0.0, ctr - half),
        ctr_high=ctr + half,
        variance=variance,
    )


def experiment_report(experiments: Experiments, feedback_dir: Path, experiment_id: str | None = None) -> Report:
    """The report of that experiment, or of the running one (else the last one)."""
    experiment = experiments.get(experiment_id)
    impressions_dir = experiments.impressions_dir(experiment.id)
    impression_files = sorted(str(p) for p in impressions_dir.glob("*.jsonl")) if impressions_dir.is_dir() else []
    feedback_files = sorted(str(p) for p in feedback_dir.glob("*.jsonl"))
    columns = ("lists", "clicks", "add_to_carts", "purchases", "shadow_hits")
    rows: list[tuple] = []
    if impression_files:
        sql = REPORT_SQL.replace("{events}", EVENTS_FROM_LOG if feedback_files else NO_EVENTS)
        params = {"impressions": impression_files}
        if feedback_files:
            params |= {"feedback": feedback_files, "started_at": experiment.started_at}
        with duckdb.connect() as con:
            rows = con.execute(sql, params).fetchall()
    arms = []
    for arm in ARMS:
        mine = np.array([row[2:] for row in rows if row[0] == arm], dtype=np.float64).reshape(-1, len(columns))
        per_user = {name: mine[:, n] for n, name in enumerate(columns)}
        shadow = experiment.shadow and arm == "treatment"
        arms.append(_arm(arm, experiment.version(arm), per_user, shadow))
    control, treatment = arms
    difference: dict[str, float | None] = {"ctr": None, "low": None, "high": None}
    if not experiment.shadow and control.requests and treatment.requests:
        d = treatment.ctr - control.ctr
        half = Z95 * math.sqrt(control.variance + treatment.variance)
        difference = {"ctr": d, "low": d - half, "high": d + half}
    running = experiments.current()
    return Report(experiment, running is not None and running.id == experiment.id, arms, difference)
