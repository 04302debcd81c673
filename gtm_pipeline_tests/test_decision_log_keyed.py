"""Drills for issue 14 §5, the second half: tamper evidence that survives a writer of the data folder.

The chain is keyed (HMAC-SHA256, key from GTM_PIPELINE_DECISION_LOG_KEY) and anchored outside the warehouse (an
append-only checkpoint file, a Prometheus gauge of the head). Each test plays a forger with write access to the
warehouse and the data folder but without the key: edit a row, delete one, cut the tail, re-hash the chain, rewrite
or delete the checkpoint file, roll both back -- and `verify` names the first bad entry.
"""

from __future__ import annotations

import json

import duckdb
import pytest
from click.testing import CliRunner
from decision_fixtures import TEST_KEY, green, pricing_metrics
from prometheus_client import CollectorRegistry, generate_latest

from gtm_pipeline.cli import main
from gtm_pipeline.config import load_settings
from gtm_pipeline.decisions import lifecycle, log, nodes, open_context
from gtm_pipeline.decisions.anchor import Anchor, anchor_for, decision_log_collector, read_checkpoints
from gtm_pipeline.decisions.hashing import hmac_sha256_hex
from gtm_pipeline.decisions.verify import seal
from gtm_pipeline.errors import GtmPipelineError

NOW = "2026-11-02T09:00:00Z"


def _walk(dc) -> str:
    """Propose, approve twice, apply: four entries, four checkpoint lines."""
    [p] = nodes.evaluate_node(dc, dc.playbooks["pricing.change"], green).proposals
    lifecycle.approve(dc, p.decision_id, role="Finance", person="farah@example.com")
    lifecycle.approve(dc, p.decision_id, role="Sales Ops", person="sam@example.com")
    lifecycle.apply(dc, p.decision_id, person="dana@example.com")
    return p.decision_id


def _walked_log(env_settings, monkeypatch):
    """A decision log with the pricing walkthrough's entries, written with whatever key the environment holds."""
    monkeypatch.setenv("GTM_PIPELINE_NOW", NOW)
    env_settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(env_settings.duckdb_path))
    pricing_metrics(con, rate_after=0.2)
    dc = open_context(con, load_settings(), health_fn=green)
    _walk(dc)
    yield dc
    con.close()


@pytest.fixture
def keyed(env_settings, monkeypatch):
    monkeypatch.setenv("GTM_PIPELINE_DECISION_LOG_KEY", TEST_KEY)
    yield from _walked_log(env_settings, monkeypatch)


def _rewrite(con, es: list[log.Entry], key: bytes | None = None, start: int = 1, stop: int | None = None) -> None:
    """What a forger does after an edit: recompute the hashes of entries ``start``..``stop`` (default: to the end;
    with ``key``: a guessed one)."""
    con.execute("DELETE FROM decisions.log")
    prev = log.GENESIS
    for e in es:
        if e.entry_id >= start and (stop is None or e.entry_id <= stop):
            e.prev_hash = prev
            e.entry_hash = e.compute_hash(key=key)
        prev = e.entry_hash
        con.execute(f"INSERT INTO decisions.log ({', '.join(log.FIELDS)}, entry_hash) VALUES "
                    f"({', '.join('?' for _ in log.FIELDS)}, ?)", [*e.content().values(), e.entry_hash])


def _forge_checkpoint(dc, es, *, key: bytes | None = None, replace: bool = False) -> None:
    """Append (or replace the file with) a checkpoint line for the forged head, signed with ``key`` if given."""
    anchor = Anchor(dc.head.folder, key)
    if replace:
        anchor.checkpoints.unlink()
    from gtm_pipeline.decisions.anchor import append_checkpoint
    append_checkpoint(anchor, es[-1].entry_id, es[-1].entry_hash, "2026-11-02 09:00:10")


def test_an_intact_keyed_chain_verifies(keyed):
    r = log.verify(keyed.con, keyed.head)
    assert (r.ok, r.status, r.entries, r.keyed_entries, r.unkeyed_entries) == (True, "ok", 4, 4, 0)
    assert r.warnings == [] and r.summary().startswith("ok: 4 entries, HMAC chain intact under key ")
    assert all(e.entry_hash.startswith("hmac-sha256:") for e in log.entries(keyed.con))
    cps = read_checkpoints(keyed.head)
    assert [c.entry_id for c in cps] == [1, 2, 3, 4] and {c.state for c in cps} == {"signed"}


@pytest.mark.parametrize("tamper,kind,entry", [
    ("UPDATE decisions.log SET chosen_action = '+1% list price for smb' WHERE entry_id = 1", "edited", 1),
    ("UPDATE decisions.log SET actor = 'mallory@example.com' WHERE entry_id = 3", "edited", 3),
    ("UPDATE decisions.log SET ts = ts + INTERVAL 1 HOUR WHERE entry_id = 2", "edited", 2),
    ("UPDATE decisions.log SET approvers = ['Finance'] WHERE entry_id = 4", "edited", 4),
    ("DELETE FROM decisions.log WHERE entry_id = 2", "deleted", 3),                    # a deleted row
    ("DELETE FROM decisions.log WHERE entry_id = 1", "deleted", 2),
    ("DELETE FROM decisions.log WHERE entry_id >= 3", "deleted", 3),                   # a truncated tail
    ("UPDATE decisions.log SET entry_id = CASE entry_id WHEN 2 THEN 3 ELSE 2 END WHERE entry_id IN (2, 3)",
     "reordered", 2),
])
def test_verify_names_the_first_bad_entry(keyed, tamper, kind, entry):
    keyed.con.execute(tamper)
    r = log.verify(keyed.con, keyed.head)
    assert not r.ok and r.status == "tampered"
    assert (r.first.kind, r.first.entry_id) == (kind, entry), r.problems


def test_a_truncated_tail_is_named_from_the_checkpoint(keyed):
    keyed.con.execute("DELETE FROM decisions.log WHERE entry_id >= 3")
    r = log.verify(keyed.con, keyed.head)
    assert str(r.first) == ("entry #3: deleted -- the log ends at #2 but the checkpoint recorded #4: the newest "
                            "entries are gone")


def test_a_rehash_without_the_key_is_caught(keyed):
    """The forger edits entry #2, re-hashes #2.. with plain sha256 and appends a checkpoint line for the new head."""
    es = log.entries(keyed.con)
    es[1].actor = "mallory@example.com"
    _rewrite(keyed.con, es, start=2)
    _forge_checkpoint(keyed, log.entries(keyed.con))
    r = log.verify(keyed.con, keyed.head)
    assert (r.first.entry_id, r.first.kind) == (2, "rehashed"), r.problems
    assert "re-hashed without the key" in r.first.detail
    kinds = {(p.entry_id, p.kind) for p in r.problems}
    assert (4, "checkpoint") in kinds                                  # the unsigned line after signed ones
    assert (2, "edited") in kinds                                      # the signed checkpoint of #2 disagrees


def test_a_rehash_of_the_whole_chain_with_a_guessed_key_is_caught(keyed):
    es = log.entries(keyed.con)
    es[1].actor = "mallory@example.com"
    guess = b"guessed-key-0000000000"
    _rewrite(keyed.con, es, key=guess)
    _forge_checkpoint(keyed, log.entries(keyed.con), key=guess, replace=True)
    r = log.verify(keyed.con, keyed.head)
    assert (r.first.entry_id, r.first.kind) == (1, "edited") and "HMAC does not match" in r.first.detail
    assert any(p.kind == "checkpoint" and "signed under key id" in p.detail for p in r.problems)


def test_a_plain_rewrite_with_the_checkpoint_file_deleted_is_caught(keyed):
    """Everything re-hashed unkeyed from #1 and the checkpoint file gone: it looks like a log from before the key --
    which under a key must have been sealed, so it does not pass."""
    es = log.entries(keyed.con)
    es[2].actor = "mallory@example.com"
    _rewrite(keyed.con, es)
    keyed.head.checkpoints.unlink()
    r = log.verify(keyed.con, keyed.head)
    assert (r.first.entry_id, r.first.kind) == (1, "unsigned") and "re-hashed without the key" in r.first.detail


def test_deleting_the_checkpoint_file_of_a_keyed_chain_is_caught(keyed):
    keyed.head.checkpoints.unlink()
    r = log.verify(keyed.con, keyed.head)
    assert not r.ok and r.first.kind == "checkpoint" and "removed or rewritten" in r.first.detail


def test_an_edited_checkpoint_line_is_caught(keyed):
    path = keyed.head.checkpoints
    lines = path.read_text().splitlines()
    doc = json.loads(lines[-1])
    doc["entry_id"] = 3                                                # pretend the log ended earlier
    path.write_text("\n".join(lines[:-1] + [json.dumps(doc)]) + "\n")
    r = log.verify(keyed.con, keyed.head)
    assert any(p.kind == "checkpoint" and "HMAC does not match" in p.detail for p in r.problems)


def test_a_rollback_of_log_and_checkpoint_is_caught_by_the_external_head(keyed):
    """Cut the log and the checkpoint file back to #2 together: locally consistent, but Prometheus saw #4."""
    registry = CollectorRegistry()
    registry.register(decision_log_collector(keyed.data_dir))
    assert "gtm_decision_log_head_sequence 4.0" in generate_latest(registry).decode()
    keyed.con.execute("DELETE FROM decisions.log WHERE entry_id >= 3")
    path = keyed.head.checkpoints
    path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n")
    assert log.verify(keyed.con, keyed.head).ok                        # nothing local can tell
    assert "gtm_decision_log_head_sequence 2.0" in generate_latest(registry).decode()   # the gauge went down
    r = log.verify(keyed.con, keyed.head, expect_head=4)
    assert str(r.first).startswith("entry #3: deleted -- the log ends at #2 but #4 was recorded outside the data "
                                   "folder")


def test_the_gauge_series(keyed):
    registry = CollectorRegistry()
    registry.register(decision_log_collector(keyed.data_dir))
    text = generate_latest(registry).decode()
    assert "gtm_decision_log_head_sequence 4.0" in text and "gtm_decision_log_checkpoint_signed 1.0" in text
    assert "gtm_decision_log_checkpoint_timestamp_seconds" in text


def test_the_checkpoint_file_is_only_appended_to(keyed):
    before = keyed.head.checkpoints.read_text()
    d = lifecycle.get(keyed, log.entries(keyed.con)[0].decision_id)
    lifecycle.reverse(keyed, d.decision_id, person="dana@example.com", reason="drill")
    after = keyed.head.checkpoints.read_text()
    assert after.startswith(before) and len(after.splitlines()) == len(before.splitlines()) + 1


def test_no_writer_extends_a_keyed_chain_without_the_key(keyed, env_settings):
    did = log.entries(keyed.con)[0].decision_id
    keyless = open_context(keyed.con, env_settings, health_fn=green, log_key=None)
    with pytest.raises(GtmPipelineError, match="decisions.log is keyed \\(entry #4 carries an HMAC\\) but "
                                               "GTM_PIPELINE_DECISION_LOG_KEY is not set"):
        lifecycle.reverse(keyless, did, person="dana@example.com", reason="x")
    wrong = open_context(keyed.con, env_settings, health_fn=green, log_key="another-key-0123456789")
    with pytest.raises(GtmPipelineError, match="entry #4 does not verify under the configured"):
        lifecycle.reverse(wrong, did, person="dana@example.com", reason="x")
    assert len(log.entries(keyed.con)) == 4


def test_verify_without_the_key_says_so_loudly(keyed, env_settings):
    keyless = open_context(keyed.con, env_settings, log_key=None)
    r = log.verify(keyless.con, keyless.head)
    assert r.ok and r.status == "unverified" and r.unchecked == 4
    assert r.warnings[0].startswith("NO KEY: GTM_PIPELINE_DECISION_LOG_KEY is not set") and \
        "4 keyed entries could not be checked" in r.warnings[0]


def test_the_key_is_stored_nowhere(keyed, env_settings):
    """Not in the warehouse file, the checkpoint file, the memos or anything else under the data folder."""
    keyed.con.execute("CHECKPOINT")
    secret = TEST_KEY.encode()
    for p in env_settings.data_dir.rglob("*"):
        if p.is_file():
            assert secret not in p.read_bytes(), p
    assert TEST_KEY not in repr(load_settings()) and TEST_KEY not in repr(keyed)


def test_a_short_key_is_refused(env_settings):
    with pytest.raises(GtmPipelineError, match="GTM_PIPELINE_DECISION_LOG_KEY is 5 characters long; use at least 16"):
        anchor_for(env_settings.data_dir, "short")


# ---- keying an existing, unkeyed log --------------------------------------------------------------------------------

@pytest.fixture
def legacy(env_settings, monkeypatch):
    """A log written without a key (4 entries), as every log was before the key existed."""
    monkeypatch.delenv("GTM_PIPELINE_DECISION_LOG_KEY", raising=False)
    yield from _walked_log(env_settings, monkeypatch)


def test_keying_an_existing_log(legacy, env_settings, monkeypatch):
    r = log.verify(legacy.con, legacy.head)
    assert r.ok and r.status == "unkeyed" and r.warnings[0].startswith("NO KEY")
    monkeypatch.setenv("GTM_PIPELINE_DECISION_LOG_KEY", TEST_KEY)
    dc = open_context(legacy.con, load_settings(), health_fn=green)
    # 1) under the key an unsigned chain does not pass, and nothing is written on top of it
    r = log.verify(dc.con, dc.head)
    assert (r.first.entry_id, r.first.kind) == (1, "unsigned") and "decisions verify --seal" in r.first.detail
    did = log.entries(dc.con)[0].decision_id
    with pytest.raises(GtmPipelineError, match="written without a key and are not sealed yet"):
        lifecycle.reverse(dc, did, person="dana@example.com", reason="x")
    # 2) a person who checked it seals it: a signed checkpoint line for its head
    r = seal(dc.con, dc.head, by="farah@example.com")
    assert r.ok and r.status == "ok"
    # 3) new entries are keyed and link to the legacy head
    lifecycle.reverse(dc, did, person="dana@example.com", reason="drill")
    es = log.entries(dc.con)
    assert [e.keyed for e in es] == [False] * 4 + [True]
    r = log.verify(dc.con, dc.head)
    assert r.ok and "entries #1..#4 predate the key" in r.warnings[0]
    # 4) a forger who edits a legacy entry and re-hashes the legacy part cannot fix the signed entry after it
    es[1].actor = "mallory@example.com"
    _rewrite(dc.con, es, start=2, stop=4)
    r = log.verify(dc.con, dc.head)
    assert not r.ok and (r.first.entry_id, r.first.kind) == (2, "edited"), r.problems
    assert any(p.entry_id == 5 and "prev_hash does not match" in p.detail for p in r.problems)


def test_seal_refuses_a_log_that_does_not_verify(legacy, monkeypatch):
    legacy.con.execute("UPDATE decisions.log SET actor = 'mallory@example.com' WHERE entry_id = 2")
    monkeypatch.setenv("GTM_PIPELINE_DECISION_LOG_KEY", TEST_KEY)
    dc = open_context(legacy.con, load_settings())
    with pytest.raises(GtmPipelineError, match="not sealed: the log does not verify \\(entry #2: edited"):
        seal(dc.con, dc.head, by="farah@example.com")


# ---- the CLI --------------------------------------------------------------------------------------------------------

def _cli(*args):
    return CliRunner().invoke(main, ["decisions", *args])


def test_cli_verify(legacy, monkeypatch):
    legacy.con.close()
    res = _cli("verify")
    assert res.exit_code == 0 and "WARNING: NO KEY: GTM_PIPELINE_DECISION_LOG_KEY is not set" in res.output
    assert "UNKEYED: 4 entries, plain sha256 chain intact" in res.output
    monkeypatch.setenv("GTM_PIPELINE_DECISION_LOG_KEY", TEST_KEY)
    res = _cli("verify")
    assert res.exit_code == 1 and "TAMPERED: entry #1: unsigned" in res.output
    res = _cli("verify", "--seal")
    assert res.exit_code == 2 and "say who seals with --by NAME" in res.output
    res = _cli("verify", "--seal", "--by", "farah@example.com")
    assert res.exit_code == 0 and "ok: 4 entries, HMAC chain intact" in res.output, res.output
    res = _cli("verify", "--expect-head", "9")
    assert res.exit_code == 1 and "but #9 was recorded outside the data folder" in res.output
    sealed = json.loads(legacy.head.checkpoints.read_text().splitlines()[-1])
    assert sealed["sealed_by"] == "farah@example.com" and sealed["mac"] == hmac_sha256_hex(
        TEST_KEY.encode(), json.dumps({k: v for k, v in sealed.items() if k != "mac"}, sort_keys=True,
                                      separators=(",", ":")))
