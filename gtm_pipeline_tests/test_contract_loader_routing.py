"""Routing rule sets (contracts/routing/*.yaml) on the one contract loader: an unknown field, a wrong type and a
typo'd value each fail at load with the file, the field, what is allowed and the closest name."""

from __future__ import annotations

import pytest

from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.errors import ContractError
from gtm_pipeline.routing import engine as routing

ENUMS = routing.routing_enums(CONTRACTS_DIR_DEFAULT)
HEAD = "rule_set: t\nversion: 1.0\nstatus: candidate\nowner: RevOps\n"


def _load(tmp_path, text: str) -> routing.RuleSet:
    p = tmp_path / "rs.yaml"
    p.write_text(text)
    return routing.parse_rule_set(p, ENUMS)


def test_a_rule_set_loads_as_the_object_the_engine_uses(tmp_path):
    rs = _load(tmp_path, HEAD + "description: ' padded '\nrules:\n"
                                "  - {name: a, applies_to: [opportunity], when: {segment: [smb]}, "
                                "assign: {team: ae, region: same, owners: [U1]}}\n")
    rule = rs.rules[0]
    assert (rs.name, rs.label, rs.description, rs.where) == ("t", "t@1.0", "padded", "contracts/routing/rs.yaml")
    assert (rule.team, rule.segment, rule.region, rule.owners) == ("ae", None, routing.SAME, frozenset({"U1"}))
    assert dict(rule.when.items()) == {"segment": frozenset({"smb"})}


@pytest.mark.parametrize("text, message", [
    # unknown field, with the closest allowed name
    (HEAD + "rules: [{name: a, applies_to: [lead], asign: {team: sdr}}]\n",
     "contracts/routing/rs.yaml: rules[0].asign: unknown field; allowed: name, description, applies_to, when, "
     'assign; did you mean "assign"?'),
    (HEAD + "rules: [{name: a, applies_to: [lead], when: {regin: [na]}}]\n",
     "contracts/routing/rs.yaml: rules[0].when.regin: unknown field; allowed: segment, region, industry, size_band, "
     'channel; did you mean "region"?'),
    # wrong type
    (HEAD + "rules: {name: a}\n",
     "contracts/routing/rs.yaml: rules: input should be a valid tuple"),
    (HEAD + "rules: [{name: a, applies_to: [lead], when: {region: na}}]\n",
     "contracts/routing/rs.yaml: rules[0].when.region: must be a non-empty list of region values, e.g. [na, emea]"),
    # typo'd value: a closed list of the contract, and an enum of the entity contracts
    (HEAD.replace("candidate", "candidat") + "rules: [{name: a, applies_to: [lead]}]\n",
     "contracts/routing/rs.yaml: status: 'candidat' is not allowed; allowed: current, candidate, retired; "
     'did you mean "candidate"?'),
    (HEAD + "rules: [{name: a, applies_to: [leads]}]\n",
     "contracts/routing/rs.yaml: rules[0].applies_to[0]: 'leads' is not allowed; allowed: lead, opportunity; "
     'did you mean "lead"?'),
    (HEAD + "rules: [{name: a, applies_to: [lead], assign: {segment: [mid_markt]}}]\n",
     "contracts/routing/rs.yaml: rules[0].assign.segment: 'mid_markt' is not a segment; allowed: smb, mid_market, "
     'enterprise; did you mean "mid_market"?'),
])
def test_rule_set_problems_read_in_the_loader_style(tmp_path, text, message):
    with pytest.raises(ContractError) as e:
        _load(tmp_path, text)
    assert str(e.value) == message


def test_a_rule_set_is_not_validated_without_the_enums(tmp_path):
    with pytest.raises(ContractError, match=r"rules\[0\]\.when\.segment: validated without 'enums'"):
        from gtm_pipeline.contract_loader import validate
        validate(routing.RuleSet, {"rule_set": "t", "version": "1", "status": "current", "owner": "x",
                                   "rules": [{"name": "a", "applies_to": ["lead"], "when": {"segment": ["smb"]}}]},
                 "rs.yaml")
