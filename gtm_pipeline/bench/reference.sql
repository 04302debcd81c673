-- The reference script of `gtm-pipeline bench` (docs/bench.md, "Reference"): the pipeline's work up to the clean
-- tables, and CAC by channel, written by hand as one plain DuckDB script over the landing folder.
--
-- It reads every export of the shipped landing spec (contracts/sources.yaml), types the values exactly as the clean
-- stage does (entity_contracts.typed_sql), keeps the first copy of each key by (delivery day, file, line), labels
-- every row by the rules of contracts/entities/*.yaml and their break actions, and sums up: clean rows per entity
-- and day, quarantine rows by table and rule, duplicates per entity and day, and CAC by channel as
-- metrics/cac_by_channel computes it. It is written for the shipped contracts, not generated from them:
-- gtm_pipeline_tests/test_bench_reference.py runs it and the pipeline on the same generated data with planted
-- defects and requires equal results, which is what keeps it honest when a contract changes.
--
-- What it leaves out, because no count depends on it: the raw tables' unused columns and lineage beyond the file,
-- the rejects' reasons and bytes, incidents, the ledger, Dagster. Within a file a record is placed by its position
-- among the file's readable records (_row), which orders copies of a key exactly as their line numbers do.
--
-- Run: SET VARIABLE landing = '<absolute path of the landing folder>'; then this file, in one connection
-- (gtm_pipeline/bench/reference.py does both and times each "-- stage:" section on its own).

SET TimeZone = 'UTC';

-- ---- typing: entity_contracts.typed_sql, one macro per contract type ------------------------------------------
CREATE OR REPLACE TEMP MACRO txt(x) AS nullif(trim(x), '');
CREATE OR REPLACE TEMP MACRO to_int(x) AS coalesce(TRY_CAST(txt(x) AS BIGINT),
    CASE WHEN TRY_CAST(txt(x) AS DOUBLE) = floor(TRY_CAST(txt(x) AS DOUBLE))
         THEN TRY_CAST(TRY_CAST(txt(x) AS DOUBLE) AS BIGINT) END);
CREATE OR REPLACE TEMP MACRO to_dec(x) AS TRY_CAST(txt(x) AS DOUBLE);
CREATE OR REPLACE TEMP MACRO to_bool(x) AS CASE lower(txt(x))
    WHEN 'true' THEN TRUE WHEN 't' THEN TRUE WHEN 'yes' THEN TRUE WHEN '1' THEN TRUE
    WHEN 'false' THEN FALSE WHEN 'f' THEN FALSE WHEN 'no' THEN FALSE WHEN '0' THEN FALSE END;
CREATE OR REPLACE TEMP MACRO to_date(x) AS coalesce(TRY_CAST(txt(x) AS DATE),
    CAST(TRY_CAST(txt(x) AS TIMESTAMPTZ) AS DATE));
-- An offset is honoured; a value without one is UTC (the session time zone).
CREATE OR REPLACE TEMP MACRO to_ts(x) AS CAST(timezone('UTC', TRY_CAST(txt(x) AS TIMESTAMPTZ)) AS TIMESTAMP);
-- Enum values match spelling-insensitively ('Paid Search' = 'paid-search' = 'paid_search'); no match keeps the text.
CREATE OR REPLACE TEMP MACRO slug(x) AS trim(regexp_replace(lower(trim(x)), '[^a-z0-9+]+', '_', 'g'), '_');
CREATE OR REPLACE TEMP MACRO as_channel(x) AS CASE slug(x)
    WHEN 'paid_search' THEN 'paid_search' WHEN 'ppc' THEN 'paid_search' WHEN 'sem' THEN 'paid_search'
    WHEN 'paid_social' THEN 'paid_social' WHEN 'social' THEN 'paid_social' WHEN 'organic_search' THEN 'organic_search'
    WHEN 'seo' THEN 'organic_search' WHEN 'email' THEN 'email' WHEN 'events' THEN 'events'
    WHEN 'referral' THEN 'referral' WHEN 'direct' THEN 'direct' WHEN 'partner' THEN 'partner' ELSE txt(x) END;
CREATE OR REPLACE TEMP MACRO as_industry(x) AS CASE
    WHEN slug(x) IN ('software', 'fintech', 'healthcare', 'retail', 'manufacturing', 'media', 'education',
                     'logistics') THEN slug(x) ELSE txt(x) END;
CREATE OR REPLACE TEMP MACRO as_size_band(x) AS CASE slug(x)
    WHEN '1_10' THEN '1-10' WHEN '11_50' THEN '11-50' WHEN '51_200' THEN '51-200' WHEN '201_1000' THEN '201-1000'
    WHEN '1001_5000' THEN '1001-5000' WHEN '5000+' THEN '5000+' ELSE txt(x) END;
CREATE OR REPLACE TEMP MACRO as_region(x) AS CASE slug(x)
    WHEN 'na' THEN 'na' WHEN 'amer' THEN 'na' WHEN 'north_america' THEN 'na' WHEN 'emea' THEN 'emea'
    WHEN 'apac' THEN 'apac' WHEN 'latam' THEN 'latam' ELSE txt(x) END;
CREATE OR REPLACE TEMP MACRO as_segment(x) AS CASE slug(x)
    WHEN 'smb' THEN 'smb' WHEN 'mid_market' THEN 'mid_market' WHEN 'mm' THEN 'mid_market'
    WHEN 'enterprise' THEN 'enterprise' WHEN 'ent' THEN 'enterprise' ELSE txt(x) END;
CREATE OR REPLACE TEMP MACRO as_currency(x) AS CASE slug(x) WHEN 'usd' THEN 'USD' ELSE txt(x) END;
-- opportunity.stage accepts 'closed' for closed_won; opportunity_stage's stages do not.
CREATE OR REPLACE TEMP MACRO as_stage(x, closed_alias) AS CASE
    WHEN slug(x) IN ('prospecting', 'discovery', 'proposal', 'negotiation', 'closed_won', 'closed_lost') THEN slug(x)
    WHEN slug(x) = 'won' THEN 'closed_won' WHEN slug(x) = 'lost' THEN 'closed_lost'
    WHEN closed_alias AND slug(x) = 'closed' THEN 'closed_won' ELSE txt(x) END;
CREATE OR REPLACE TEMP MACRO as_lead_status(x) AS CASE
    WHEN slug(x) IN ('new', 'working', 'sql', 'disqualified', 'converted') THEN slug(x)
    WHEN slug(x) = 'mql' THEN 'new' WHEN slug(x) = 'open' THEN 'working' ELSE txt(x) END;
CREATE OR REPLACE TEMP MACRO as_dq_reason(x) AS CASE
    WHEN slug(x) IN ('no_budget', 'no_authority', 'no_need', 'bad_timing', 'competitor', 'invalid_contact',
                     'student_or_personal') THEN slug(x) ELSE txt(x) END;
CREATE OR REPLACE TEMP MACRO as_routed_by(x) AS CASE
    WHEN slug(x) IN ('engine', 'round_robin', 'manual') THEN slug(x) ELSE txt(x) END;
CREATE OR REPLACE TEMP MACRO as_team(x) AS CASE slug(x)
    WHEN 'sdr' THEN 'sdr' WHEN 'bdr' THEN 'sdr' WHEN 'ae' THEN 'ae' WHEN 'account_executive' THEN 'ae'
    ELSE txt(x) END;
CREATE OR REPLACE TEMP MACRO as_activity_type(x) AS CASE
    WHEN slug(x) IN ('meeting', 'call', 'demo', 'email', 'web_session', 'page_view', 'form_fill') THEN slug(x)
    ELSE txt(x) END;
CREATE OR REPLACE TEMP MACRO as_activity_status(x) AS CASE
    WHEN slug(x) IN ('scheduled', 'completed', 'no_show', 'cancelled') THEN slug(x)
    WHEN slug(x) = 'canceled' THEN 'cancelled' WHEN slug(x) = 'noshow' THEN 'no_show' ELSE txt(x) END;

-- ---- rules: a broken rule is a struct (kind, action); a row's list keeps the clean stage's order --------------
-- type: text present (not blank) that does not parse. A DOUBLE NaN counts as missing, as it does in pandas.
CREATE OR REPLACE TEMP MACRO unparsed(raw, v) AS CASE WHEN v IS NOT NULL OR raw IS NULL THEN FALSE
    ELSE regexp_matches(raw, '\S') END;
CREATE OR REPLACE TEMP MACRO unparsed_dec(raw, v) AS CASE WHEN (v IS NOT NULL AND NOT isnan(v)) OR raw IS NULL
    THEN FALSE ELSE regexp_matches(raw, '\S') END;
-- required: missing, unless it is missing because it did not parse (then it is a type failure only).
CREATE OR REPLACE TEMP MACRO absent(raw, v) AS v IS NULL AND NOT unparsed(raw, v);
CREATE OR REPLACE TEMP MACRO absent_dec(raw, v) AS (v IS NULL OR isnan(v)) AND NOT unparsed_dec(raw, v);
CREATE OR REPLACE TEMP MACRO off_range(v, lo, hi) AS coalesce(NOT isnan(v::DOUBLE) AND (v < lo OR v > hi), FALSE);
CREATE OR REPLACE TEMP MACRO broke(cond, kind, action) AS CASE WHEN cond THEN {'kind': kind, 'action': action} END;
CREATE OR REPLACE TEMP MACRO broken(rules) AS list_filter(rules, lambda r: r IS NOT NULL);
-- Where a row goes: a duplicate is rejected whatever else it breaks; otherwise the strongest action wins.
CREATE OR REPLACE TEMP MACRO has_action(v, a) AS list_contains(list_transform(v, lambda r: r.action), a);
CREATE OR REPLACE TEMP MACRO fate(dup, v) AS CASE WHEN dup THEN 'duplicate'
    WHEN has_action(v, 'block') THEN 'blocking' WHEN has_action(v, 'quarantine') THEN 'quarantine'
    WHEN has_action(v, 'missing_owner') THEN 'missing_owner' ELSE 'clean' END;
-- The quarantine row's rule: the first broken rule whose action decided the row.
CREATE OR REPLACE TEMP MACRO first_rule(v, f) AS
    list_filter(v, lambda r: r.action = CASE f WHEN 'blocking' THEN 'block' ELSE f END)[1].kind;

-- ---- readers: every file of an export, with its path relative to the landing folder and its delivery day -----
-- CSV: the ingest stage's dialect and its reader settings: the columns of contracts/sources.yaml by position, no
-- sniffing (a small file with a malformed line can mislead a sniffer), a malformed or non-UTF-8 record skipped (the
-- pipeline rejects it). The header line is read as a record too (_header: the first of its file) so that the
-- ingest section can check every file's column names, then drop it.
CREATE OR REPLACE TEMP MACRO csv_records(pattern, cols) AS TABLE
    SELECT *, _row = min(_row) OVER (PARTITION BY _file) AS _header FROM (
        SELECT * EXCLUDE (filename), substr(filename, length(getvariable('landing')) + 2) AS _file,
               row_number() OVER () AS _row
        FROM read_csv(getvariable('landing') || '/' || pattern, columns = cols, header = false, auto_detect = false,
                      delim = ',', quote = '"', escape = '"', ignore_errors = true, filename = true,
                      max_line_size = 10000000));
-- The columns of a header record whose name is neither the column's nor one of its known aliases (a UTF-8 byte
-- order mark before the first name is allowed, as ingest strips it).
CREATE OR REPLACE TEMP MACRO no_aliases() AS MAP {}::MAP(VARCHAR, VARCHAR[]);
CREATE OR REPLACE TEMP MACRO misnamed(r, aliases) AS list_filter(
    list_filter(json_keys(to_json(r)), lambda k: k NOT IN ('_file', '_row', '_header', '_partition')),
    lambda k: NOT list_contains(list_concat([k], coalesce(aliases[k], [])),
                                ltrim(json_extract_string(to_json(r), '$."' || k || '"'), chr(65279))));
-- JSONL: one text column per physical line; blank lines are no records, a line that is not a JSON object is
-- rejected by the pipeline and skipped here.
CREATE OR REPLACE TEMP MACRO jsonl_text(pattern) AS TABLE
    SELECT _raw, substr(filename, length(getvariable('landing')) + 2) AS _file, _row FROM (
        SELECT *, row_number() OVER () AS _row
        FROM read_csv(getvariable('landing') || '/' || pattern, columns = {'_raw': 'VARCHAR'}, header = false,
                      delim = '\x01', quote = '', escape = '', auto_detect = false, strict_mode = false,
                      ignore_errors = true, filename = true, max_line_size = 10000000))
    WHERE _raw IS NOT NULL AND trim(_raw) <> '' AND coalesce(json_valid(_raw), FALSE)
      AND json_type(_raw) = 'OBJECT';
CREATE OR REPLACE TEMP MACRO parquet_rows(pattern) AS TABLE
    SELECT * EXCLUDE (filename, file_row_number), substr(filename, length(getvariable('landing')) + 2) AS _file,
           file_row_number AS _row
    FROM read_parquet(getvariable('landing') || '/' || pattern, union_by_name = true, filename = true,
                      file_row_number = true);
CREATE OR REPLACE TEMP MACRO delivery_day(f) AS CAST(split_part(f, '/', 2) AS DATE);

-- stage: ingest
-- Every record as text, as the raw tables hold it (only the columns the clean tables read).
CREATE OR REPLACE TABLE ref_raw_web_sessions AS
SELECT v[1] AS session_id, v[2] AS lead_id, v[3] AS started_at, v[4] AS utm_source, v[5] AS utm_medium,
       v[6] AS utm_campaign, v[7] AS channel, v[8] AS landing_page, _file, delivery_day(_file) AS _partition, _row
FROM (SELECT json_extract_string(_raw, ['$.session_id', '$.lead_id', '$.started_at', '$.utm_source', '$.utm_medium',
                                        '$.utm_campaign', '$.channel', '$.landing_page']) AS v, _file, _row
      FROM jsonl_text('web/*/sessions.jsonl'));
CREATE OR REPLACE TABLE ref_raw_web_pageviews AS
SELECT v[1] AS pageview_id, v[2] AS session_id, v[3] AS lead_id, v[4] AS viewed_at, v[5] AS url,
       v[6] AS time_on_page_s, _file, delivery_day(_file) AS _partition, _row
FROM (SELECT json_extract_string(_raw, ['$.pageview_id', '$.session_id', '$.lead_id', '$.viewed_at', '$.url',
                                        '$.time_on_page_s']) AS v, _file, _row
      FROM jsonl_text('web/*/pageviews.jsonl'));
CREATE OR REPLACE TABLE ref_raw_web_form_fills AS
SELECT v[1] AS form_fill_id, v[2] AS session_id, v[3] AS lead_id, v[4] AS submitted_at, v[5] AS form,
       v[6] AS utm_source, v[7] AS utm_medium, v[8] AS utm_campaign, v[9] AS channel, _file,
       delivery_day(_file) AS _partition, _row
FROM (SELECT json_extract_string(_raw, ['$.form_fill_id', '$.session_id', '$.lead_id', '$.submitted_at', '$.form',
                                        '$.utm_source', '$.utm_medium', '$.utm_campaign', '$.channel']) AS v,
             _file, _row
      FROM jsonl_text('web/*/form_fills.jsonl'));
CREATE OR REPLACE TABLE ref_raw_calendar_events AS
SELECT v[1] AS event_id, v[2] AS type, v[3] AS subject, v[4] AS start_at, v[5] AS end_at,
       v[6] AS organizer_owner_id, v[7] AS lead_id, v[8] AS contact_id, v[9] AS account_id, v[10] AS opportunity_id,
       v[11] AS status, _file, delivery_day(_file) AS _partition, _row
FROM (SELECT json_extract_string(_raw, ['$.event_id', '$.type', '$.subject', '$.start_at', '$.end_at',
                                        '$.organizer_owner_id', '$.lead_id', '$.contact_id', '$.account_id',
                                        '$.opportunity_id', '$.status']) AS v, _file, _row
      FROM jsonl_text('calendar/*/events.jsonl'));
CREATE OR REPLACE TABLE ref_raw_ads_spend AS
SELECT *, delivery_day(_file) AS _partition FROM csv_records('ads/*/spend.csv', {
    'date': 'VARCHAR', 'channel': 'VARCHAR', 'campaign_id': 'VARCHAR', 'campaign_name': 'VARCHAR',
    'impressions': 'VARCHAR', 'clicks': 'VARCHAR', 'spend': 'VARCHAR', 'currency': 'VARCHAR'});
CREATE OR REPLACE TABLE ref_raw_crm_owners AS
SELECT *, delivery_day(_file) AS _partition FROM csv_records('crm/*/owners.csv', {
    'owner_id': 'VARCHAR', 'name': 'VARCHAR', 'email': 'VARCHAR', 'team': 'VARCHAR', 'segment': 'VARCHAR',
    'region': 'VARCHAR', 'capacity_per_day': 'VARCHAR', 'monthly_cost': 'VARCHAR', 'active': 'VARCHAR',
    'updated_at': 'VARCHAR'});
CREATE OR REPLACE TABLE ref_raw_crm_accounts AS
SELECT *, delivery_day(_file) AS _partition FROM csv_records('crm/*/accounts.csv', {
    'account_id': 'VARCHAR', 'name': 'VARCHAR', 'domain': 'VARCHAR', 'industry': 'VARCHAR', 'size_band': 'VARCHAR',
    'employees': 'VARCHAR', 'region': 'VARCHAR', 'segment': 'VARCHAR', 'created_at': 'VARCHAR',
    'owner_id': 'VARCHAR'});
CREATE OR REPLACE TABLE ref_raw_crm_contacts AS
SELECT *, delivery_day(_file) AS _partition FROM csv_records('crm/*/contacts.csv', {
    'contact_id': 'VARCHAR', 'account_id': 'VARCHAR', 'lead_id': 'VARCHAR', 'email': 'VARCHAR',
    'first_name': 'VARCHAR', 'last_name': 'VARCHAR', 'title': 'VARCHAR', 'created_at': 'VARCHAR'});
CREATE OR REPLACE TABLE ref_raw_crm_leads AS
SELECT *, delivery_day(_file) AS _partition FROM csv_records('crm/*/leads.csv', {
    'lead_id': 'VARCHAR', 'created_at': 'VARCHAR', 'email': 'VARCHAR', 'company': 'VARCHAR',
    'account_id': 'VARCHAR', 'channel': 'VARCHAR', 'campaign_id': 'VARCHAR', 'utm_source': 'VARCHAR',
    'utm_medium': 'VARCHAR', 'utm_campaign': 'VARCHAR', 'industry': 'VARCHAR', 'size_band': 'VARCHAR',
    'region': 'VARCHAR', 'segment': 'VARCHAR', 'score': 'VARCHAR', 'status': 'VARCHAR',
    'status_changed_at': 'VARCHAR', 'dq_reason': 'VARCHAR', 'owner_id': 'VARCHAR', 'assigned_at': 'VARCHAR',
    'routed_by': 'VARCHAR'});
CREATE OR REPLACE TABLE ref_raw_crm_opportunities AS
SELECT *, delivery_day(_file) AS _partition FROM csv_records('crm/*/opportunities.csv', {
    'opportunity_id': 'VARCHAR', 'account_id': 'VARCHAR', 'lead_id': 'VARCHAR', 'owner_id': 'VARCHAR',
    'created_at': 'VARCHAR', 'stage': 'VARCHAR', 'product': 'VARCHAR', 'list_price': 'VARCHAR',
    'discount': 'VARCHAR', 'seats': 'VARCHAR', 'amount': 'VARCHAR', 'currency': 'VARCHAR', 'segment': 'VARCHAR',
    'region': 'VARCHAR', 'industry': 'VARCHAR', 'size_band': 'VARCHAR', 'channel': 'VARCHAR',
    'close_date': 'VARCHAR'});
CREATE OR REPLACE TABLE ref_raw_crm_opportunity_stages AS
SELECT *, delivery_day(_file) AS _partition FROM csv_records('crm/*/opportunity_stages.csv', {
    'stage_event_id': 'VARCHAR', 'opportunity_id': 'VARCHAR', 'from_stage': 'VARCHAR', 'to_stage': 'VARCHAR',
    'changed_at': 'VARCHAR', 'amount': 'VARCHAR', 'loss_reason': 'VARCHAR'});
-- A file whose header is not the export's columns (in order; a known alias in a column's place is fine) cannot be
-- read by position: stop and say which (the pipeline maps columns by name and reports the drift).
SELECT CASE WHEN count(*) > 0 THEN error('reference.sql reads CSV columns by position, but ' || count(*)
    || ' file(s) name other columns, e.g. ' || min(_file || ' (' || array_to_string(names, ', ') || ')')) END
FROM (SELECT _file, misnamed(r, MAP {'spend': ['cost', 'spend_usd']}) AS names FROM ref_raw_ads_spend r WHERE _header
      UNION ALL SELECT _file, misnamed(r, no_aliases()) FROM ref_raw_crm_owners r WHERE _header
      UNION ALL SELECT _file, misnamed(r, no_aliases()) FROM ref_raw_crm_accounts r WHERE _header
      UNION ALL SELECT _file, misnamed(r, no_aliases()) FROM ref_raw_crm_contacts r WHERE _header
      UNION ALL SELECT _file, misnamed(r, no_aliases()) FROM ref_raw_crm_leads r WHERE _header
      UNION ALL SELECT _file, misnamed(r, MAP {'amount': ['amount_usd', 'acv']})
                FROM ref_raw_crm_opportunities r WHERE _header
      UNION ALL SELECT _file, misnamed(r, no_aliases()) FROM ref_raw_crm_opportunity_stages r WHERE _header)
WHERE len(names) > 0;
DELETE FROM ref_raw_ads_spend WHERE _header;
DELETE FROM ref_raw_crm_owners WHERE _header;
DELETE FROM ref_raw_crm_accounts WHERE _header;
DELETE FROM ref_raw_crm_contacts WHERE _header;
DELETE FROM ref_raw_crm_leads WHERE _header;
DELETE FROM ref_raw_crm_opportunities WHERE _header;
DELETE FROM ref_raw_crm_opportunity_stages WHERE _header;
CREATE OR REPLACE TABLE ref_raw_vendors_firmographics AS
SELECT COLUMNS(* EXCLUDE (_file, _row))::VARCHAR, _file, delivery_day(_file) AS _partition, _row
FROM parquet_rows('vendors/*/firmographics.parquet');
CREATE OR REPLACE TABLE ref_raw_vendors_intent AS
SELECT COLUMNS(* EXCLUDE (_file, _row))::VARCHAR, _file, delivery_day(_file) AS _partition, _row
FROM parquet_rows('vendors/*/intent.parquet');
CREATE OR REPLACE TABLE ref_raw_vendors_costs AS
SELECT COLUMNS(* EXCLUDE (_file, _row))::VARCHAR, _file, delivery_day(_file) AS _partition, _row
FROM parquet_rows('vendors/*/costs.parquet');

-- stage: clean
-- One table per entity: typed columns, lineage, _fate (clean, quarantine, blocking, missing_owner, duplicate; a
-- blocked day's clean rows become held) and _rule (the quarantine row's rule). Each rule list is in the clean
-- stage's order: type failures by column, row checks, then per column required, enum, range.
CREATE OR REPLACE TABLE ref_account AS
WITH t AS (
    SELECT txt(account_id) AS account_id, txt(name) AS name, txt(domain) AS domain, as_industry(industry) AS industry,
           as_size_band(size_band) AS size_band, to_int(employees) AS employees, as_region(region) AS region,
           as_segment(segment) AS segment, to_ts(created_at) AS created_at, txt(owner_id) AS owner_id,
           employees AS raw_employees, created_at AS raw_created_at, _file, _partition, _row
    FROM ref_raw_crm_accounts),
c AS (
    SELECT *, account_id IS NOT NULL
              AND row_number() OVER (PARTITION BY account_id ORDER BY _partition, _file, _row) > 1 AS _dup,
           broken([broke(unparsed(raw_employees, employees), 'type', 'quarantine'),
                   broke(unparsed(raw_created_at, created_at), 'type', 'quarantine'),
                   broke(account_id IS NULL, 'required', 'quarantine'),
                   broke(name IS NULL, 'required', 'quarantine'),
                   broke(industry NOT IN ('software', 'fintech', 'healthcare', 'retail', 'manufacturing', 'media',
                                          'education', 'logistics'), 'enum', 'quarantine'),
                   broke(size_band NOT IN ('1-10', '11-50', '51-200', '201-1000', '1001-5000', '5000+'), 'enum',
                         'quarantine'),
                   broke(off_range(employees, 1, 5000000), 'range', 'block'),
                   broke(region NOT IN ('na', 'emea', 'apac', 'latam'), 'enum', 'quarantine'),
                   broke(segment NOT IN ('smb', 'mid_market', 'enterprise'), 'enum', 'quarantine')]) AS _v
    FROM t)
SELECT * EXCLUDE (_dup, _v, raw_employees, raw_created_at), fate(_dup, _v) AS _fate,
       first_rule(_v, fate(_dup, _v)) AS _rule
FROM c;

CREATE OR REPLACE TABLE ref_activity AS
WITH text AS (
    SELECT session_id AS activity_id, 'web_session' AS activity_type, started_at AS occurred_at, lead_id,
           session_id, channel, utm_source, utm_medium, utm_campaign, landing_page AS url, _file, _partition, _row
    FROM ref_raw_web_sessions
    UNION ALL BY NAME
    SELECT pageview_id AS activity_id, 'page_view' AS activity_type, viewed_at AS occurred_at, lead_id, session_id,
           url, time_on_page_s AS duration_s, _file, _partition, _row
    FROM ref_raw_web_pageviews
    UNION ALL BY NAME
    SELECT form_fill_id AS activity_id, 'form_fill' AS activity_type, submitted_at AS occurred_at, lead_id,
           session_id, channel, utm_source, utm_medium, utm_campaign, form AS subject, _file, _partition, _row
    FROM ref_raw_web_form_fills
    UNION ALL BY NAME
    SELECT event_id AS activity_id, type AS activity_type, subject, start_at AS occurred_at, end_at AS ended_at,
           organizer_owner_id AS owner_id, lead_id, contact_id, account_id, opportunity_id, status, _file,
           _partition, _row
    FROM ref_raw_calendar_events),
t AS (
    SELECT txt(activity_id) AS activity_id, as_activity_type(activity_type) AS activity_type,
           to_ts(occurred_at) AS occurred_at, to_ts(ended_at) AS ended_at, txt(owner_id) AS owner_id,
           txt(lead_id) AS lead_id, txt(contact_id) AS contact_id, txt(account_id) AS account_id,
           txt(opportunity_id) AS opportunity_id, txt(session_id) AS session_id, as_channel(channel) AS channel,
           txt(utm_source) AS utm_source, txt(utm_medium) AS utm_medium, txt(utm_campaign) AS utm_campaign,
           txt(url) AS url, txt(subject) AS subject, as_activity_status(status) AS status,
           to_dec(duration_s) AS duration_s, occurred_at AS raw_occurred_at, ended_at AS raw_ended_at,
           duration_s AS raw_duration_s, _file, _partition, _row
    FROM text),
c AS (
    SELECT *, activity_id IS NOT NULL
              AND row_number() OVER (PARTITION BY activity_id ORDER BY _partition, _file, _row) > 1 AS _dup,
           broken([broke(unparsed(raw_occurred_at, occurred_at), 'type', 'quarantine'),
                   broke(unparsed(raw_ended_at, ended_at), 'type', 'quarantine'),
                   broke(unparsed_dec(raw_duration_s, duration_s), 'type', 'quarantine'),
                   broke(NOT coalesce(ended_at IS NULL OR ended_at >= occurred_at, FALSE), 'row_check',
                         'quarantine'),
                   broke(activity_id IS NULL, 'required', 'quarantine'),
                   broke(activity_type IS NULL, 'required', 'quarantine'),
                   broke(activity_type NOT IN ('meeting', 'call', 'demo', 'email', 'web_session', 'page_view',
                                               'form_fill'), 'enum', 'quarantine'),
                   broke(absent(raw_occurred_at, occurred_at), 'required', 'quarantine'),
                   broke(channel NOT IN ('paid_search', 'paid_social', 'organic_search', 'email', 'events',
                                         'referral', 'direct', 'partner'), 'enum', 'quarantine'),
                   broke(status NOT IN ('scheduled', 'completed', 'no_show', 'cancelled'), 'enum', 'quarantine'),
                   broke(off_range(duration_s, 0, 86400), 'range', 'block')]) AS _v
    FROM t)
SELECT * EXCLUDE (_dup, _v, raw_occurred_at, raw_ended_at, raw_duration_s), fate(_dup, _v) AS _fate,
       first_rule(_v, fate(_dup, _v)) AS _rule
FROM c;

CREATE OR REPLACE TABLE ref_ad_spend AS
WITH t AS (
    SELECT to_date(date) AS spend_date, as_channel(channel) AS channel, txt(campaign_id) AS campaign_id,
           txt(campaign_name) AS campaign_name, to_int(impressions) AS impressions, to_int(clicks) AS clicks,
           to_dec(spend) AS spend, as_currency(currency) AS currency, date AS raw_date,
           impressions AS raw_impressions, clicks AS raw_clicks, spend AS raw_spend, _file, _partition, _row
    FROM ref_raw_ads_spend),
c AS (
    SELECT *, spend_date IS NOT NULL AND campaign_id IS NOT NULL
              AND row_number() OVER (PARTITION BY spend_date, campaign_id ORDER BY _partition, _file, _row) > 1
              AS _dup,
           broken([broke(unparsed(raw_date, spend_date), 'type', 'quarantine'),
                   broke(unparsed(raw_impressions, impressions), 'type', 'quarantine'),
                   broke(unparsed(raw_clicks, clicks), 'type', 'quarantine'),
                   broke(unparsed_dec(raw_spend, spend), 'type', 'quarantine'),
                   broke(NOT coalesce(clicks IS NULL OR impressions IS NULL OR clicks <= impressions, FALSE),
                         'row_check', 'quarantine'),
                   broke(absent(raw_date, spend_date), 'required', 'quarantine'),
                   broke(channel IS NULL, 'required', 'quarantine'),
                   broke(channel NOT IN ('paid_search', 'paid_social', 'organic_search', 'email', 'events',
                                         'referral', 'direct', 'partner'), 'enum', 'quarantine'),
                   broke(campaign_id IS NULL, 'required', 'quarantine'),
                   broke(off_range(impressions, 0, 1000000000), 'range', 'block'),
                   broke(off_range(clicks, 0, 100000000), 'range', 'block'),
                   broke(absent_dec(raw_spend, spend), 'required', 'quarantine'),
                   broke(off_range(spend, 0, 1000000), 'range', 'block'),
                   broke(currency NOT IN ('USD'), 'enum', 'quarantine')]) AS _v
    FROM t)
SELECT * EXCLUDE (_dup, _v, raw_date, raw_impressions, raw_clicks, raw_spend), fate(_dup, _v) AS _fate,
       first_rule(_v, fate(_dup, _v)) AS _rule
FROM c;

CREATE OR REPLACE TABLE ref_contact AS
WITH t AS (
    SELECT txt(contact_id) AS contact_id, txt(account_id) AS account_id, txt(lead_id) AS lead_id,
           txt(email) AS email, txt(first_name) AS first_name, txt(last_name) AS last_name, txt(title) AS title,
           to_ts(created_at) AS created_at, created_at AS raw_created_at, _file, _partition, _row
    FROM ref_raw_crm_contacts),
c AS (
    SELECT *, contact_id IS NOT NULL
              AND row_number() OVER (PARTITION BY contact_id ORDER BY _partition, _file, _row) > 1 AS _dup,
           broken([broke(unparsed(raw_created_at, created_at), 'type', 'quarantine'),
                   broke(contact_id IS NULL, 'required', 'quarantine')]) AS _v
    FROM t)
SELECT * EXCLUDE (_dup, _v, raw_created_at), fate(_dup, _v) AS _fate, first_rule(_v, fate(_dup, _v)) AS _rule
FROM c;

CREATE OR REPLACE TABLE ref_firmographic AS
WITH t AS (
    SELECT txt(record_id) AS record_id, txt(domain) AS domain, txt(account_id) AS account_id,
           as_industry(industry) AS industry, as_size_band(size_band) AS size_band, to_int(employees) AS employees,
           as_region(region) AS region, to_ts(observed_at) AS observed_at, txt(vendor) AS vendor,
           employees AS raw_employees, observed_at AS raw_observed_at, _file, _partition, _row
    FROM ref_raw_vendors_firmographics),
c AS (
    SELECT *, record_id IS NOT NULL
              AND row_number() OVER (PARTITION BY record_id ORDER BY _partition, _file, _row) > 1 AS _dup,
           broken([broke(unparsed(raw_employees, employees), 'type', 'quarantine'),
                   broke(unparsed(raw_observed_at, observed_at), 'type', 'quarantine'),
                   broke(record_id IS NULL, 'required', 'quarantine'),
                   broke(industry NOT IN ('software', 'fintech', 'healthcare', 'retail', 'manufacturing', 'media',
                                          'education', 'logistics'), 'enum', 'quarantine'),
                   broke(size_band NOT IN ('1-10', '11-50', '51-200', '201-1000', '1001-5000', '5000+'), 'enum',
                         'quarantine'),
                   broke(off_range(employees, 1, 5000000), 'range', 'block'),
                   broke(region NOT IN ('na', 'emea', 'apac', 'latam'), 'enum', 'quarantine')]) AS _v
    FROM t)
SELECT * EXCLUDE (_dup, _v, raw_employees, raw_observed_at), fate(_dup, _v) AS _fate,
       first_rule(_v, fate(_dup, _v)) AS _rule
FROM c;

CREATE OR REPLACE TABLE ref_intent AS
WITH t AS (
    SELECT txt(record_id) AS record_id, txt(account_id) AS account_id, txt(domain) AS domain, txt(topic) AS topic,
           to_dec(intent_score) AS intent_score, to_ts(observed_at) AS observed_at, txt(vendor) AS vendor,
           intent_score AS raw_intent_score, observed_at AS raw_observed_at, _file, _partition, _row
    FROM ref_raw_vendors_intent),
c AS (
    SELECT *, record_id IS NOT NULL
              AND row_number() OVER (PARTITION BY record_id ORDER BY _partition, _file, _row) > 1 AS _dup,
           broken([broke(unparsed_dec(raw_intent_score, intent_score), 'type', 'quarantine'),
                   broke(unparsed(raw_observed_at, observed_at), 'type', 'quarantine'),
                   broke(record_id IS NULL, 'required', 'quarantine'),
                   broke(absent_dec(raw_intent_score, intent_score), 'required', 'quarantine'),
                   broke(off_range(intent_score, 0, 100), 'range', 'block')]) AS _v
    FROM t)
SELECT * EXCLUDE (_dup, _v, raw_intent_score, raw_observed_at), fate(_dup, _v) AS _fate,
       first_rule(_v, fate(_dup, _v)) AS _rule
FROM c;

CREATE OR REPLACE TABLE ref_lead AS
WITH t AS (
    SELECT txt(lead_id) AS lead_id, to_ts(created_at) AS created_at, txt(email) AS email, txt(company) AS company,
           txt(account_id) AS account_id, as_channel(channel) AS channel, txt(campaign_id) AS campaign_id,
           txt(utm_source) AS utm_source, txt(utm_medium) AS utm_medium, txt(utm_campaign) AS utm_campaign,
           as_industry(industry) AS industry, as_size_band(size_band) AS size_band, as_region(region) AS region,
           as_segment(segment) AS segment, to_dec(score) AS score, as_lead_status(status) AS status,
           to_ts(status_changed_at) AS status_changed_at, as_dq_reason(dq_reason) AS dq_reason,
           txt(owner_id) AS owner_id, to_ts(assigned_at) AS assigned_at, as_routed_by(routed_by) AS routed_by,
           created_at AS raw_created_at, score AS raw_score, status_changed_at AS raw_status_changed_at,
           assigned_at AS raw_assigned_at, _file, _partition, _row
    FROM ref_raw_crm_leads),
c AS (
    SELECT *, lead_id IS NOT NULL
              AND row_number() OVER (PARTITION BY lead_id ORDER BY _partition, _file, _row) > 1 AS _dup,
           broken([broke(unparsed(raw_created_at, created_at), 'type', 'quarantine'),
                   broke(unparsed_dec(raw_score, score), 'type', 'quarantine'),
                   broke(unparsed(raw_status_changed_at, status_changed_at), 'type', 'quarantine'),
                   broke(unparsed(raw_assigned_at, assigned_at), 'type', 'quarantine'),
                   broke(NOT coalesce(assigned_at IS NULL OR assigned_at >= created_at, FALSE), 'row_check',
                         'quarantine'),
                   broke(lead_id IS NULL, 'required', 'quarantine'),
                   broke(absent(raw_created_at, created_at), 'required', 'quarantine'),
                   broke(channel IS NULL, 'required', 'quarantine'),
                   broke(channel NOT IN ('paid_search', 'paid_social', 'organic_search', 'email', 'events',
                                         'referral', 'direct', 'partner'), 'enum', 'quarantine'),
                   broke(industry NOT IN ('software', 'fintech', 'healthcare', 'retail', 'manufacturing', 'media',
                                          'education', 'logistics'), 'enum', 'quarantine'),
                   broke(size_band NOT IN ('1-10', '11-50', '51-200', '201-1000', '1001-5000', '5000+'), 'enum',
                         'quarantine'),
                   broke(region NOT IN ('na', 'emea', 'apac', 'latam'), 'enum', 'quarantine'),
                   broke(segment NOT IN ('smb', 'mid_market', 'enterprise'), 'enum', 'quarantine'),
                   broke(off_range(score, 0, 100), 'range', 'block'),
                   broke(status NOT IN ('new', 'working', 'sql', 'disqualified', 'converted'), 'enum', 'quarantine'),
                   broke(dq_reason NOT IN ('no_budget', 'no_authority', 'no_need', 'bad_timing', 'competitor',
                                           'invalid_contact', 'student_or_personal'), 'enum', 'quarantine'),
                   broke(routed_by NOT IN ('engine', 'round_robin', 'manual'), 'enum', 'quarantine')]) AS _v
    FROM t)
SELECT * EXCLUDE (_dup, _v, raw_created_at, raw_score, raw_status_changed_at, raw_assigned_at),
       fate(_dup, _v) AS _fate, first_rule(_v, fate(_dup, _v)) AS _rule
FROM c;

CREATE OR REPLACE TABLE ref_opportunity AS
WITH t AS (
    SELECT txt(opportunity_id) AS opportunity_id, txt(account_id) AS account_id, txt(lead_id) AS lead_id,
           txt(owner_id) AS owner_id, to_ts(created_at) AS created_at, as_stage(stage, TRUE) AS stage,
           txt(product) AS product, to_dec(list_price) AS list_price, to_dec(discount) AS discount,
           to_int(seats) AS seats, to_dec(amount) AS amount, as_currency(currency) AS currency,
           as_segment(segment) AS segment, as_region(region) AS region, as_industry(industry) AS industry,
           as_size_band(size_band) AS size_band, as_channel(channel) AS channel, to_date(close_date) AS close_date,
           created_at AS raw_created_at, list_price AS raw_list_price, discount AS raw_discount, seats AS raw_seats,
           amount AS raw_amount, close_date AS raw_close_date, _file, _partition, _row
    FROM ref_raw_crm_opportunities),
c AS (
    SELECT *, opportunity_id IS NOT NULL
              AND row_number() OVER (PARTITION BY opportunity_id ORDER BY _partition, _file, _row) > 1 AS _dup,
           broken([broke(unparsed(raw_created_at, created_at), 'type', 'quarantine'),
                   broke(unparsed_dec(raw_list_price, list_price), 'type', 'quarantine'),
                   broke(unparsed_dec(raw_discount, discount), 'type', 'quarantine'),
                   broke(unparsed(raw_seats, seats), 'type', 'quarantine'),
                   broke(unparsed_dec(raw_amount, amount), 'type', 'quarantine'),
                   broke(unparsed(raw_close_date, close_date), 'type', 'quarantine'),
                   broke(opportunity_id IS NULL, 'required', 'quarantine'),
                   broke(account_id IS NULL, 'required', 'quarantine'),
                   -- spec 002 §3: an opportunity without an owner goes to quarantine.missing_owner for routing.
                   broke(owner_id IS NULL, 'required', 'missing_owner'),
                   broke(absent(raw_created_at, created_at), 'required', 'quarantine'),
                   broke(stage IS NULL, 'required', 'quarantine'),
                   broke(stage NOT IN ('prospecting', 'discovery', 'proposal', 'negotiation', 'closed_won',
                                       'closed_lost'), 'enum', 'quarantine'),
                   broke(off_range(list_price, 1, 10000), 'range', 'block'),
                   broke(off_range(discount, 0, 0.9), 'range', 'block'),
                   broke(off_range(seats, 1, 100000), 'range', 'block'),
                   broke(off_range(amount, 0, 5000000), 'range', 'block'),
                   broke(currency NOT IN ('USD'), 'enum', 'quarantine'),
                   broke(segment NOT IN ('smb', 'mid_market', 'enterprise'), 'enum', 'quarantine'),
                   broke(region NOT IN ('na', 'emea', 'apac', 'latam'), 'enum', 'quarantine'),
                   broke(industry NOT IN ('software', 'fintech', 'healthcare', 'retail', 'manufacturing', 'media',
                                          'education', 'logistics'), 'enum', 'quarantine'),
                   broke(size_band NOT IN ('1-10', '11-50', '51-200', '201-1000', '1001-5000', '5000+'), 'enum',
                         'quarantine'),
                   broke(channel NOT IN ('paid_search', 'paid_social', 'organic_search', 'email', 'events',
                                         'referral', 'direct', 'partner'), 'enum', 'quarantine')]) AS _v
    FROM t)
SELECT * EXCLUDE (_dup, _v, raw_created_at, raw_list_price, raw_discount, raw_seats, raw_amount, raw_close_date),
       fate(_dup, _v) AS _fate, first_rule(_v, fate(_dup, _v)) AS _rule
FROM c;

CREATE OR REPLACE TABLE ref_opportunity_stage AS
WITH t AS (
    SELECT txt(stage_event_id) AS stage_event_id, txt(opportunity_id) AS opportunity_id,
           as_stage(from_stage, FALSE) AS from_stage, as_stage(to_stage, FALSE) AS to_stage,
           to_ts(changed_at) AS changed_at, to_dec(amount) AS amount, txt(loss_reason) AS loss_reason,
           changed_at AS raw_changed_at, amount AS raw_amount, _file, _partition, _row
    FROM ref_raw_crm_opportunity_stages),
c AS (
    SELECT *, stage_event_id IS NOT NULL
              AND row_number() OVER (PARTITION BY stage_event_id ORDER BY _partition, _file, _row) > 1 AS _dup,
           broken([broke(unparsed(raw_changed_at, changed_at), 'type', 'quarantine'),
                   broke(unparsed_dec(raw_amount, amount), 'type', 'quarantine'),
                   broke(NOT coalesce(to_stage <> 'closed_won' OR amount IS NOT NULL, FALSE), 'row_check',
                         'quarantine'),
                   broke(stage_event_id IS NULL, 'required', 'quarantine'),
                   broke(opportunity_id IS NULL, 'required', 'quarantine'),
                   broke(from_stage NOT IN ('prospecting', 'discovery', 'proposal', 'negotiation', 'closed_won',
                                            'closed_lost'), 'enum', 'quarantine'),
                   broke(to_stage IS NULL, 'required', 'quarantine'),
                   broke(to_stage NOT IN ('prospecting', 'discovery', 'proposal', 'negotiation', 'closed_won',
                                          'closed_lost'), 'enum', 'quarantine'),
                   broke(absent(raw_changed_at, changed_at), 'required', 'quarantine'),
                   broke(off_range(amount, 0, 5000000), 'range', 'block')]) AS _v
    FROM t)
SELECT * EXCLUDE (_dup, _v, raw_changed_at, raw_amount), fate(_dup, _v) AS _fate,
       first_rule(_v, fate(_dup, _v)) AS _rule
FROM c;

CREATE OR REPLACE TABLE ref_owner AS
WITH t AS (
    SELECT txt(owner_id) AS owner_id, txt(name) AS name, txt(email) AS email, as_team(team) AS team,
           as_segment(segment) AS segment, as_region(region) AS region, to_int(capacity_per_day) AS capacity_per_day,
           to_dec(monthly_cost) AS monthly_cost, to_bool(active) AS active, to_ts(updated_at) AS updated_at,
           capacity_per_day AS raw_capacity_per_day, monthly_cost AS raw_monthly_cost, active AS raw_active,
           updated_at AS raw_updated_at, _file, _partition, _row
    FROM ref_raw_crm_owners),
c AS (
    SELECT *, owner_id IS NOT NULL AND updated_at IS NOT NULL
              AND row_number() OVER (PARTITION BY owner_id, updated_at ORDER BY _partition, _file, _row) > 1 AS _dup,
           broken([broke(unparsed(raw_capacity_per_day, capacity_per_day), 'type', 'quarantine'),
                   broke(unparsed_dec(raw_monthly_cost, monthly_cost), 'type', 'quarantine'),
                   broke(unparsed(raw_active, active), 'type', 'quarantine'),
                   broke(unparsed(raw_updated_at, updated_at), 'type', 'quarantine'),
                   broke(owner_id IS NULL, 'required', 'quarantine'),
                   broke(team IS NULL, 'required', 'quarantine'),
                   broke(team NOT IN ('sdr', 'ae'), 'enum', 'quarantine'),
                   broke(segment NOT IN ('smb', 'mid_market', 'enterprise'), 'enum', 'quarantine'),
                   broke(region NOT IN ('na', 'emea', 'apac', 'latam'), 'enum', 'quarantine'),
                   broke(off_range(capacity_per_day, 0, 1000), 'range', 'block'),
                   broke(off_range(monthly_cost, 0, 100000), 'range', 'block'),
                   broke(absent(raw_updated_at, updated_at), 'required', 'quarantine')]) AS _v
    FROM t)
SELECT * EXCLUDE (_dup, _v, raw_capacity_per_day, raw_monthly_cost, raw_active, raw_updated_at),
       fate(_dup, _v) AS _fate, first_rule(_v, fate(_dup, _v)) AS _rule
FROM c;

CREATE OR REPLACE TABLE ref_vendor_cost AS
WITH t AS (
    SELECT txt(cost_id) AS cost_id, to_date(date) AS cost_date, txt(vendor) AS vendor, as_channel(channel) AS channel,
           txt(category) AS category, to_dec(amount) AS amount, as_currency(currency) AS currency,
           date AS raw_date, amount AS raw_amount, _file, _partition, _row
    FROM ref_raw_vendors_costs),
c AS (
    SELECT *, cost_id IS NOT NULL
              AND row_number() OVER (PARTITION BY cost_id ORDER BY _partition, _file, _row) > 1 AS _dup,
           broken([broke(unparsed(raw_date, cost_date), 'type', 'quarantine'),
                   broke(unparsed_dec(raw_amount, amount), 'type', 'quarantine'),
                   broke(cost_id IS NULL, 'required', 'quarantine'),
                   broke(absent(raw_date, cost_date), 'required', 'quarantine'),
                   broke(channel NOT IN ('paid_search', 'paid_social', 'organic_search', 'email', 'events',
                                         'referral', 'direct', 'partner'), 'enum', 'quarantine'),
                   broke(absent_dec(raw_amount, amount), 'required', 'quarantine'),
                   broke(off_range(amount, 0, 1000000), 'range', 'block'),
                   broke(currency NOT IN ('USD'), 'enum', 'quarantine')]) AS _v
    FROM t)
SELECT * EXCLUDE (_dup, _v, raw_date, raw_amount), fate(_dup, _v) AS _fate, first_rule(_v, fate(_dup, _v)) AS _rule
FROM c;

-- spec 002 §3: an out-of-range value blocks its entity's day; that day's other rows wait in quarantine as held.
UPDATE ref_account SET _fate = 'held' WHERE _fate = 'clean'
    AND _partition IN (SELECT _partition FROM ref_account WHERE _fate = 'blocking');
UPDATE ref_activity SET _fate = 'held' WHERE _fate = 'clean'
    AND _partition IN (SELECT _partition FROM ref_activity WHERE _fate = 'blocking');
UPDATE ref_ad_spend SET _fate = 'held' WHERE _fate = 'clean'
    AND _partition IN (SELECT _partition FROM ref_ad_spend WHERE _fate = 'blocking');
UPDATE ref_contact SET _fate = 'held' WHERE _fate = 'clean'
    AND _partition IN (SELECT _partition FROM ref_contact WHERE _fate = 'blocking');
UPDATE ref_firmographic SET _fate = 'held' WHERE _fate = 'clean'
    AND _partition IN (SELECT _partition FROM ref_firmographic WHERE _fate = 'blocking');
UPDATE ref_intent SET _fate = 'held' WHERE _fate = 'clean'
    AND _partition IN (SELECT _partition FROM ref_intent WHERE _fate = 'blocking');
UPDATE ref_lead SET _fate = 'held' WHERE _fate = 'clean'
    AND _partition IN (SELECT _partition FROM ref_lead WHERE _fate = 'blocking');
UPDATE ref_opportunity SET _fate = 'held' WHERE _fate = 'clean'
    AND _partition IN (SELECT _partition FROM ref_opportunity WHERE _fate = 'blocking');
UPDATE ref_opportunity_stage SET _fate = 'held' WHERE _fate = 'clean'
    AND _partition IN (SELECT _partition FROM ref_opportunity_stage WHERE _fate = 'blocking');
UPDATE ref_owner SET _fate = 'held' WHERE _fate = 'clean'
    AND _partition IN (SELECT _partition FROM ref_owner WHERE _fate = 'blocking');
UPDATE ref_vendor_cost SET _fate = 'held' WHERE _fate = 'clean'
    AND _partition IN (SELECT _partition FROM ref_vendor_cost WHERE _fate = 'blocking');

-- docs/contracts.md "Held with its parent": a first copy that would be clean, whose reference is a key waiting in its
-- parent's quarantine (quarantined, blocking, missing owner or held) and not also clean, waits as held. Parents
-- first, as the clean steps run (gtm_pipeline/clean/references.py, reference_levels): owner; account and lead;
-- contact and opportunity; opportunity_stage.
UPDATE ref_account SET _fate = 'held', _rule = 'held' WHERE _fate = 'clean' AND owner_id IN (
    SELECT owner_id FROM ref_owner WHERE _fate IN ('quarantine', 'blocking', 'missing_owner', 'held')
    AND owner_id IS NOT NULL EXCEPT SELECT owner_id FROM ref_owner WHERE _fate = 'clean' AND owner_id IS NOT NULL);
UPDATE ref_lead SET _fate = 'held', _rule = 'held' WHERE _fate = 'clean' AND owner_id IN (
    SELECT owner_id FROM ref_owner WHERE _fate IN ('quarantine', 'blocking', 'missing_owner', 'held')
    AND owner_id IS NOT NULL EXCEPT SELECT owner_id FROM ref_owner WHERE _fate = 'clean' AND owner_id IS NOT NULL);
UPDATE ref_contact SET _fate = 'held', _rule = 'held' WHERE _fate = 'clean' AND account_id IN (
    SELECT account_id FROM ref_account WHERE _fate IN ('quarantine', 'blocking', 'missing_owner', 'held')
    AND account_id IS NOT NULL EXCEPT SELECT account_id FROM ref_account WHERE _fate = 'clean' AND account_id IS NOT NULL);
UPDATE ref_opportunity SET _fate = 'held', _rule = 'held' WHERE _fate = 'clean' AND account_id IN (
    SELECT account_id FROM ref_account WHERE _fate IN ('quarantine', 'blocking', 'missing_owner', 'held')
    AND account_id IS NOT NULL EXCEPT SELECT account_id FROM ref_account WHERE _fate = 'clean' AND account_id IS NOT NULL);
UPDATE ref_opportunity SET _fate = 'held', _rule = 'held' WHERE _fate = 'clean' AND lead_id IN (
    SELECT lead_id FROM ref_lead WHERE _fate IN ('quarantine', 'blocking', 'missing_owner', 'held')
    AND lead_id IS NOT NULL EXCEPT SELECT lead_id FROM ref_lead WHERE _fate = 'clean' AND lead_id IS NOT NULL);
UPDATE ref_opportunity SET _fate = 'held', _rule = 'held' WHERE _fate = 'clean' AND owner_id IN (
    SELECT owner_id FROM ref_owner WHERE _fate IN ('quarantine', 'blocking', 'missing_owner', 'held')
    AND owner_id IS NOT NULL EXCEPT SELECT owner_id FROM ref_owner WHERE _fate = 'clean' AND owner_id IS NOT NULL);
UPDATE ref_opportunity_stage SET _fate = 'held', _rule = 'held' WHERE _fate = 'clean' AND opportunity_id IN (
    SELECT opportunity_id FROM ref_opportunity WHERE _fate IN ('quarantine', 'blocking', 'missing_owner', 'held')
    AND opportunity_id IS NOT NULL EXCEPT SELECT opportunity_id FROM ref_opportunity WHERE _fate = 'clean' AND opportunity_id IS NOT NULL);

-- stage: contracts
-- Where every typed row went, per entity and day: the figures the equality test compares with the pipeline's.
CREATE OR REPLACE TABLE ref_outcomes AS
SELECT entity, _partition AS day, _fate AS fate, CASE WHEN _fate = 'held' THEN 'held' ELSE _rule END AS rule,
       count(*) AS n
FROM (SELECT 'account' AS entity, _partition, _fate, _rule FROM ref_account
      UNION ALL SELECT 'activity', _partition, _fate, _rule FROM ref_activity
      UNION ALL SELECT 'ad_spend', _partition, _fate, _rule FROM ref_ad_spend
      UNION ALL SELECT 'contact', _partition, _fate, _rule FROM ref_contact
      UNION ALL SELECT 'firmographic', _partition, _fate, _rule FROM ref_firmographic
      UNION ALL SELECT 'intent', _partition, _fate, _rule FROM ref_intent
      UNION ALL SELECT 'lead', _partition, _fate, _rule FROM ref_lead
      UNION ALL SELECT 'opportunity', _partition, _fate, _rule FROM ref_opportunity
      UNION ALL SELECT 'opportunity_stage', _partition, _fate, _rule FROM ref_opportunity_stage
      UNION ALL SELECT 'owner', _partition, _fate, _rule FROM ref_owner
      UNION ALL SELECT 'vendor_cost', _partition, _fate, _rule FROM ref_vendor_cost)
GROUP BY ALL;
CREATE OR REPLACE VIEW ref_clean_counts AS
SELECT entity, day, sum(n)::BIGINT AS n FROM ref_outcomes WHERE fate = 'clean' GROUP BY ALL;
-- quarantine.<entity> holds quarantined, blocking and held rows; quarantine.missing_owner the rows without owner.
CREATE OR REPLACE VIEW ref_quarantine_totals AS
SELECT CASE WHEN fate = 'missing_owner' THEN 'missing_owner' ELSE entity END AS quarantine_table, entity, rule,
       sum(n)::BIGINT AS n
FROM ref_outcomes WHERE fate IN ('quarantine', 'blocking', 'missing_owner', 'held') GROUP BY ALL;
CREATE OR REPLACE VIEW ref_duplicates AS
SELECT entity, day, sum(n)::BIGINT AS n FROM ref_outcomes WHERE fate = 'duplicate' GROUP BY ALL;

-- stage: metrics
-- metrics/cac_by_channel (gtm_pipeline/metrics/unit_economics.py over the facts of metrics/facts.py): marketing
-- cost = ad spend + vendor costs of the channel; wins = closed-won opportunities, booked to the opportunity's
-- channel, else its lead's; cac = marketing cost / wins; row 'all' is the blend of every channel.
CREATE OR REPLACE TABLE ref_cac_by_channel AS
WITH costs AS (
    SELECT channel, spend AS amount FROM ref_ad_spend WHERE _fate = 'clean'
    UNION ALL
    SELECT coalesce(channel, 'unallocated'), amount FROM ref_vendor_cost WHERE _fate = 'clean'),
won AS (SELECT DISTINCT opportunity_id FROM ref_opportunity_stage WHERE _fate = 'clean' AND to_stage = 'closed_won'),
wins AS (
    SELECT coalesce(o.channel, l.channel, 'unknown') AS channel, count(*) AS wins
    FROM won w
    JOIN ref_opportunity o ON o.opportunity_id = w.opportunity_id AND o._fate = 'clean'
    LEFT JOIN ref_lead l ON l.lead_id = o.lead_id AND l._fate = 'clean'
    GROUP BY ALL),
by_channel AS (
    SELECT coalesce(c.channel, w.channel) AS channel, coalesce(c.marketing_cost, 0) AS marketing_cost,
           coalesce(w.wins, 0) AS wins
    FROM (SELECT channel, sum(amount) AS marketing_cost FROM costs GROUP BY ALL) c
    FULL JOIN wins w ON w.channel = c.channel)
SELECT CASE WHEN grouping(channel) = 1 THEN 'all' ELSE channel END AS channel,
       CAST(sum(marketing_cost) AS DOUBLE) AS marketing_cost, CAST(sum(wins) AS BIGINT) AS wins,
       CAST(sum(marketing_cost) AS DOUBLE) / nullif(sum(wins), 0) AS cac
FROM by_channel GROUP BY ROLLUP (channel);
