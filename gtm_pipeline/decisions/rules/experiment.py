"""experiment.ship (spec 000 Layer E): ship, roll back or stop an experiment when its latest readout says so.

The readout (`gtm_pipeline.experiments.readout`, published as metrics.experiment_readout) already holds the verdict of
each look; the rule turns it into a decision and refuses to act on a readout that cannot be trusted:
* the split failed its sample-ratio-mismatch test (SRM p below ``srm_min_p``) -> held, "insufficient data" is the
  wrong word here, so the reason is "invalid readout"; never shipped, never rolled back;
* the minimum runtime is not reached, or the interval still straddles the threshold -> no decision (keep running);
* ``ship <arm>`` -> flip the experiment's flag to the arm; ``roll back`` (a guardrail) -> flip it to the control;
  ``stop`` (no effect of the threshold's size, or the maximum runtime) -> flip it to the control and end.
"""

from __future__ import annotations

from typing import Any

from gtm_pipeline.decisions.rules.common import Outcome, finish, hold, num

INVALID = "invalid readout"


def evaluate_experiment(experiment: str, rows: list[dict], t: dict) -> Outcome:
    """``rows``: the latest look of one experiment, one row per arm (the control first, ``is_control``)."""
    reasons: list[str] = []
    held: dict[str, dict[str, str]] = {}
    if not rows:
        hold(held, reasons, experiment, "no look in metrics.experiment_readout yet")
        return finish(Outcome(experiment, None, f"no decision for {experiment}: no readout yet", reasons, {},
                              ["keep running"], held))
    control = next((r for r in rows if r["is_control"]), rows[0])
    treatments = [r for r in rows if not r["is_control"]]
    look = rows[0]
    figures: dict[str, Any] = {
        "look": look["look"], "as_of": look["as_of"], "method": look["method"], "srm_p": num(look["srm_p"]),
        "verdict": look["verdict"], "control": control["arm"],
        "arms": {r["arm"]: {"units": r["units"], "mean": num(r["mean"]), "estimate": num(r["estimate"]),
                            "ci_low": num(r["ci_low"]), "ci_high": num(r["ci_high"]), "p_min": num(r["p_min"])}
                 for r in rows},
        "guardrails": look["guardrails"],
    }
    options = ["keep running", "ship the best arm", "roll back to the control", "stop"]
    srm = num(look["srm_p"])
    if srm is None or srm < t["srm_min_p"]:
        held[experiment] = {"reason": INVALID,
                            "detail": f"sample ratio mismatch: SRM p {srm if srm is None else f'{srm:.2g}'} < "
                                      f"{t['srm_min_p']} (the split is broken; fix the assignment, restart)"}
        reasons.append(f"{experiment}: held -- {INVALID}: {held[experiment]['detail']}")
        return finish(Outcome(experiment, None, f"no decision for {experiment}: {INVALID} (sample ratio mismatch)",
                              reasons, figures, options, held))
    verdict = str(look["verdict"])
    reasons.append(f"look {look['look']} ({look['as_of']}, {look['method']}): {verdict}")
    if verdict.startswith("ship "):
        best = max(treatments, key=lambda r: num(r["estimate"]) or float("-inf"))
        action = {"kind": "experiment", "decision": "ship", "arm": best["arm"], "experiment": experiment}
        summary = f"ship {best['arm']} of {experiment}"
    elif verdict.startswith("roll back"):
        action = {"kind": "experiment", "decision": "roll back", "arm": control["arm"], "experiment": experiment}
        summary = f"roll back {experiment} to {control['arm']} ({verdict.removeprefix('roll back: ')})"
    elif verdict.startswith("stop"):
        action = {"kind": "experiment", "decision": "stop", "arm": control["arm"], "experiment": experiment}
        summary = f"stop {experiment}: keep {control['arm']} ({verdict.removeprefix('stop: ')})"
    else:
        return finish(Outcome(experiment, None, f"no decision for {experiment}: {verdict}", reasons, figures,
                              options, held))
    figures["decided_arm"] = action["arm"]
    return finish(Outcome(experiment, action, summary, reasons, figures, options, held))
