-- V5: truth in SQL without holes (issue 12).
--
-- A stock sqlite3 shell runs with foreign keys OFF and recursive triggers OFF, and may type
-- any DML. This migration rebuilds every table as STRICT (SQLite >= 3.37) with CHECKs for
-- canonical forms, and replaces the triggers so that:
--   * REPLACE / upsert paths cannot delete a row silently: a BEFORE INSERT trigger refuses an
--     existing key (and an explicit id at or below the table's AUTOINCREMENT high-water mark);
--   * multi-column rules fire on EVERY update (never `UPDATE OF col`);
--   * ids never change; terminal rows are wholly frozen; timeline entries are append-only;
--   * references are enforced by triggers as well as by foreign keys;
--   * schedule zones are checked against `zones`, filled here from the tz database the crate
--     ships (tests prove the two lists equal).
-- Every RAISE message is `CODE: table: rule`; Error::from_sqlite maps it to Error::Refused.
-- Audit rows and events carry a SHA-256 hash chain computed by Rust (src/integrity.rs);
-- rows written before V5 are listed in `integrity_legacy` and stay unchained.
--
-- An existing row that breaks a new rule makes this migration fail with
-- `MIGRATION_REFUSED: <table> row <id>`: nothing is dropped silently.

-- 1. Old triggers and indexes go first (the renames below would otherwise rewrite them).

DROP TRIGGER IF EXISTS jobs_state_machine;
DROP TRIGGER IF EXISTS jobs_completed_is_final;
DROP TRIGGER IF EXISTS jobs_attempt_fencing;
DROP TRIGGER IF EXISTS jobs_insert_created;
DROP TRIGGER IF EXISTS jobs_delete_terminal_only;
DROP TRIGGER IF EXISTS audit_log_no_update;
DROP TRIGGER IF EXISTS audit_log_no_delete;
DROP TRIGGER IF EXISTS job_events_seq_follows;
DROP TRIGGER IF EXISTS job_events_prune;
DROP TRIGGER IF EXISTS job_events_no_update;
DROP TRIGGER IF EXISTS job_events_no_delete;
DROP TRIGGER IF EXISTS ingest_runs_insert_started;
DROP TRIGGER IF EXISTS ingest_runs_terminal_is_final;
DROP TRIGGER IF EXISTS ingest_runs_state_machine;
DROP TRIGGER IF EXISTS ingest_runs_identity_fixed;
DROP TRIGGER IF EXISTS ingest_runs_timeline_grows;
DROP TRIGGER IF EXISTS ingest_runs_delete_terminal_only;
DROP TRIGGER IF EXISTS raw_records_insert_checked;
DROP TRIGGER IF EXISTS raw_records_no_update;
DROP TRIGGER IF EXISTS raw_records_delete_orphans_only;
DROP TRIGGER IF EXISTS raw_payloads_no_update;
DROP TRIGGER IF EXISTS raw_payloads_delete_unreferenced_only;
DROP TRIGGER IF EXISTS schedules_high_water_mark;
DROP TRIGGER IF EXISTS schedules_delete_idle_only;
DROP TRIGGER IF EXISTS due_runs_state_machine;
DROP TRIGGER IF EXISTS due_runs_terminal_is_final;
DROP TRIGGER IF EXISTS due_runs_identity_is_fixed;
DROP TRIGGER IF EXISTS due_runs_insert_pending_after_high_water_mark;
DROP TRIGGER IF EXISTS due_runs_delete_not_claimed;
DROP INDEX IF EXISTS jobs_claim;
DROP INDEX IF EXISTS jobs_running_heartbeat;
DROP INDEX IF EXISTS jobs_user;
DROP INDEX IF EXISTS jobs_resumable;
DROP INDEX IF EXISTS jobs_parent;
DROP INDEX IF EXISTS audit_log_entity;
DROP INDEX IF EXISTS ingest_runs_one_active;
DROP INDEX IF EXISTS ingest_runs_lease;
DROP INDEX IF EXISTS ingest_runs_started;
DROP INDEX IF EXISTS ingest_runs_status_started;
DROP INDEX IF EXISTS ingest_runs_scope_status;
DROP INDEX IF EXISTS ingest_runs_pipeline;
DROP INDEX IF EXISTS ingest_runs_pipeline_started;
DROP INDEX IF EXISTS ingest_runs_error_code;
DROP INDEX IF EXISTS ingest_probes_module;
DROP INDEX IF EXISTS raw_records_run;
DROP INDEX IF EXISTS raw_records_sha256;
DROP INDEX IF EXISTS schedules_due;
DROP INDEX IF EXISTS due_runs_claim;
DROP INDEX IF EXISTS due_runs_claimed;
DROP INDEX IF EXISTS due_runs_missed;
DROP INDEX IF EXISTS due_runs_in_flight;

-- 2. The V4 tables step aside; their rows are copied into the STRICT tables below.
ALTER TABLE jobs RENAME TO jobs_v4;
ALTER TABLE audit_log RENAME TO audit_log_v4;
ALTER TABLE job_events RENAME TO job_events_v4;
ALTER TABLE supervisor_state RENAME TO supervisor_state_v4;
ALTER TABLE ingest_runs RENAME TO ingest_runs_v4;
ALTER TABLE ingest_modules RENAME TO ingest_modules_v4;
ALTER TABLE ingest_probes RENAME TO ingest_probes_v4;
ALTER TABLE raw_payloads RENAME TO raw_payloads_v4;
ALTER TABLE raw_records RENAME TO raw_records_v4;
ALTER TABLE schedules RENAME TO schedules_v4;
ALTER TABLE due_runs RENAME TO due_runs_v4;

-- 3. Refusals while copying: a V4 row that the V5 rules refuse is named, and the migration
-- fails. (A TEMP trigger: only this migration's connection ever parses it.)
CREATE TEMP TABLE v5_refused (tbl TEXT NOT NULL, id TEXT NOT NULL);
CREATE TEMP TRIGGER v5_refused_raise BEFORE INSERT ON v5_refused
BEGIN
    SELECT RAISE(ABORT, 'MIGRATION_REFUSED: ' || NEW.tbl || ' row ' || NEW.id
                        || ' breaks a V5 rule (see migrations/V5); fix or delete it, then open again');
END;

-- IANA zone names of the tz database compiled into the crate (time-tz), plus UTC.
CREATE TABLE zones (name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64)) STRICT;

INSERT INTO zones (name) VALUES ('Africa/Abidjan'), ('Africa/Accra'), ('Africa/Addis_Ababa'), ('Africa/Algiers'), ('Africa/Asmara'), ('Africa/Asmera'), ('Africa/Bamako'), ('Africa/Bangui');
INSERT INTO zones (name) VALUES ('Africa/Banjul'), ('Africa/Bissau'), ('Africa/Blantyre'), ('Africa/Brazzaville'), ('Africa/Bujumbura'), ('Africa/Cairo'), ('Africa/Casablanca'), ('Africa/Ceuta');
INSERT INTO zones (name) VALUES ('Africa/Conakry'), ('Africa/Dakar'), ('Africa/Dar_es_Salaam'), ('Africa/Djibouti'), ('Africa/Douala'), ('Africa/El_Aaiun'), ('Africa/Freetown'), ('Africa/Gaborone');
INSERT INTO zones (name) VALUES ('Africa/Harare'), ('Africa/Johannesburg'), ('Africa/Juba'), ('Africa/Kampala'), ('Africa/Khartoum'), ('Africa/Kigali'), ('Africa/Kinshasa'), ('Africa/Lagos');
INSERT INTO zones (name) VALUES ('Africa/Libreville'), ('Africa/Lome'), ('Africa/Luanda'), ('Africa/Lubumbashi'), ('Africa/Lusaka'), ('Africa/Malabo'), ('Africa/Maputo'), ('Africa/Maseru');
INSERT INTO zones (name) VALUES ('Africa/Mbabane'), ('Africa/Mogadishu'), ('Africa/Monrovia'), ('Africa/Nairobi'), ('Africa/Ndjamena'), ('Africa/Niamey'), ('Africa/Nouakchott'), ('Africa/Ouagadougou');
INSERT INTO zones (name) VALUES ('Africa/Porto-Novo'), ('Africa/Sao_Tome'), ('Africa/Timbuktu'), ('Africa/Tripoli'), ('Africa/Tunis'), ('Africa/Windhoek'), ('America/Adak'), ('America/Anchorage');
INSERT INTO zones (name) VALUES ('America/Anguilla'), ('America/Antigua'), ('America/Araguaina'), ('America/Argentina/Buenos_Aires'), ('America/Argentina/Catamarca'), ('America/Argentina/ComodRivadavia'), ('America/Argentina/Cordoba'), ('America/Argentina/Jujuy');
INSERT INTO zones (name) VALUES ('America/Argentina/La_Rioja'), ('America/Argentina/Mendoza'), ('America/Argentina/Rio_Gallegos'), ('America/Argentina/Salta'), ('America/Argentina/San_Juan'), ('America/Argentina/San_Luis'), ('America/Argentina/Tucuman'), ('America/Argentina/Ushuaia');
INSERT INTO zones (name) VALUES ('America/Aruba'), ('America/Asuncion'), ('America/Atikokan'), ('America/Atka'), ('America/Bahia'), ('America/Bahia_Banderas'), ('America/Barbados'), ('America/Belem');
INSERT INTO zones (name) VALUES ('America/Belize'), ('America/Blanc-Sablon'), ('America/Boa_Vista'), ('America/Bogota'), ('America/Boise'), ('America/Buenos_Aires'), ('America/Cambridge_Bay'), ('America/Campo_Grande');
INSERT INTO zones (name) VALUES ('America/Cancun'), ('America/Caracas'), ('America/Catamarca'), ('America/Cayenne'), ('America/Cayman'), ('America/Chicago'), ('America/Chihuahua'), ('America/Coral_Harbour');
INSERT INTO zones (name) VALUES ('America/Cordoba'), ('America/Costa_Rica'), ('America/Creston'), ('America/Cuiaba'), ('America/Curacao'), ('America/Danmarkshavn'), ('America/Dawson'), ('America/Dawson_Creek');
INSERT INTO zones (name) VALUES ('America/Denver'), ('America/Detroit'), ('America/Dominica'), ('America/Edmonton'), ('America/Eirunepe'), ('America/El_Salvador'), ('America/Ensenada'), ('America/Fort_Nelson');
INSERT INTO zones (name) VALUES ('America/Fort_Wayne'), ('America/Fortaleza'), ('America/Glace_Bay'), ('America/Godthab'), ('America/Goose_Bay'), ('America/Grand_Turk'), ('America/Grenada'), ('America/Guadeloupe');
INSERT INTO zones (name) VALUES ('America/Guatemala'), ('America/Guayaquil'), ('America/Guyana'), ('America/Halifax'), ('America/Havana'), ('America/Hermosillo'), ('America/Indiana/Indianapolis'), ('America/Indiana/Knox');
INSERT INTO zones (name) VALUES ('America/Indiana/Marengo'), ('America/Indiana/Petersburg'), ('America/Indiana/Tell_City'), ('America/Indiana/Vevay'), ('America/Indiana/Vincennes'), ('America/Indiana/Winamac'), ('America/Indianapolis'), ('America/Inuvik');
INSERT INTO zones (name) VALUES ('America/Iqaluit'), ('America/Jamaica'), ('America/Jujuy'), ('America/Juneau'), ('America/Kentucky/Louisville'), ('America/Kentucky/Monticello'), ('America/Knox_IN'), ('America/Kralendijk');
INSERT INTO zones (name) VALUES ('America/La_Paz'), ('America/Lima'), ('America/Los_Angeles'), ('America/Louisville'), ('America/Lower_Princes'), ('America/Maceio'), ('America/Managua'), ('America/Manaus');
INSERT INTO zones (name) VALUES ('America/Marigot'), ('America/Martinique'), ('America/Matamoros'), ('America/Mazatlan'), ('America/Mendoza'), ('America/Menominee'), ('America/Merida'), ('America/Metlakatla');
INSERT INTO zones (name) VALUES ('America/Mexico_City'), ('America/Miquelon'), ('America/Moncton'), ('America/Monterrey'), ('America/Montevideo'), ('America/Montreal'), ('America/Montserrat'), ('America/Nassau');
INSERT INTO zones (name) VALUES ('America/New_York'), ('America/Nipigon'), ('America/Nome'), ('America/Noronha'), ('America/North_Dakota/Beulah'), ('America/North_Dakota/Center'), ('America/North_Dakota/New_Salem'), ('America/Nuuk');
INSERT INTO zones (name) VALUES ('America/Ojinaga'), ('America/Panama'), ('America/Pangnirtung'), ('America/Paramaribo'), ('America/Phoenix'), ('America/Port-au-Prince'), ('America/Port_of_Spain'), ('America/Porto_Acre');
INSERT INTO zones (name) VALUES ('America/Porto_Velho'), ('America/Puerto_Rico'), ('America/Punta_Arenas'), ('America/Rainy_River'), ('America/Rankin_Inlet'), ('America/Recife'), ('America/Regina'), ('America/Resolute');
INSERT INTO zones (name) VALUES ('America/Rio_Branco'), ('America/Rosario'), ('America/Santa_Isabel'), ('America/Santarem'), ('America/Santiago'), ('America/Santo_Domingo'), ('America/Sao_Paulo'), ('America/Scoresbysund');
INSERT INTO zones (name) VALUES ('America/Shiprock'), ('America/Sitka'), ('America/St_Barthelemy'), ('America/St_Johns'), ('America/St_Kitts'), ('America/St_Lucia'), ('America/St_Thomas'), ('America/St_Vincent');
INSERT INTO zones (name) VALUES ('America/Swift_Current'), ('America/Tegucigalpa'), ('America/Thule'), ('America/Thunder_Bay'), ('America/Tijuana'), ('America/Toronto'), ('America/Tortola'), ('America/Vancouver');
INSERT INTO zones (name) VALUES ('America/Virgin'), ('America/Whitehorse'), ('America/Winnipeg'), ('America/Yakutat'), ('America/Yellowknife'), ('Antarctica/Casey'), ('Antarctica/Davis'), ('Antarctica/DumontDUrville');
INSERT INTO zones (name) VALUES ('Antarctica/Macquarie'), ('Antarctica/Mawson'), ('Antarctica/McMurdo'), ('Antarctica/Palmer'), ('Antarctica/Rothera'), ('Antarctica/South_Pole'), ('Antarctica/Syowa'), ('Antarctica/Troll');
INSERT INTO zones (name) VALUES ('Antarctica/Vostok'), ('Arctic/Longyearbyen'), ('Asia/Aden'), ('Asia/Almaty'), ('Asia/Amman'), ('Asia/Anadyr'), ('Asia/Aqtau'), ('Asia/Aqtobe');
INSERT INTO zones (name) VALUES ('Asia/Ashgabat'), ('Asia/Ashkhabad'), ('Asia/Atyrau'), ('Asia/Baghdad'), ('Asia/Bahrain'), ('Asia/Baku'), ('Asia/Bangkok'), ('Asia/Barnaul');
INSERT INTO zones (name) VALUES ('Asia/Beirut'), ('Asia/Bishkek'), ('Asia/Brunei'), ('Asia/Calcutta'), ('Asia/Chita'), ('Asia/Choibalsan'), ('Asia/Chongqing'), ('Asia/Chungking');
INSERT INTO zones (name) VALUES ('Asia/Colombo'), ('Asia/Dacca'), ('Asia/Damascus'), ('Asia/Dhaka'), ('Asia/Dili'), ('Asia/Dubai'), ('Asia/Dushanbe'), ('Asia/Famagusta');
INSERT INTO zones (name) VALUES ('Asia/Gaza'), ('Asia/Harbin'), ('Asia/Hebron'), ('Asia/Ho_Chi_Minh'), ('Asia/Hong_Kong'), ('Asia/Hovd'), ('Asia/Irkutsk'), ('Asia/Istanbul');
INSERT INTO zones (name) VALUES ('Asia/Jakarta'), ('Asia/Jayapura'), ('Asia/Jerusalem'), ('Asia/Kabul'), ('Asia/Kamchatka'), ('Asia/Karachi'), ('Asia/Kashgar'), ('Asia/Kathmandu');
INSERT INTO zones (name) VALUES ('Asia/Katmandu'), ('Asia/Khandyga'), ('Asia/Kolkata'), ('Asia/Krasnoyarsk'), ('Asia/Kuala_Lumpur'), ('Asia/Kuching'), ('Asia/Kuwait'), ('Asia/Macao');
INSERT INTO zones (name) VALUES ('Asia/Macau'), ('Asia/Magadan'), ('Asia/Makassar'), ('Asia/Manila'), ('Asia/Muscat'), ('Asia/Nicosia'), ('Asia/Novokuznetsk'), ('Asia/Novosibirsk');
INSERT INTO zones (name) VALUES ('Asia/Omsk'), ('Asia/Oral'), ('Asia/Phnom_Penh'), ('Asia/Pontianak'), ('Asia/Pyongyang'), ('Asia/Qatar'), ('Asia/Qostanay'), ('Asia/Qyzylorda');
INSERT INTO zones (name) VALUES ('Asia/Rangoon'), ('Asia/Riyadh'), ('Asia/Saigon'), ('Asia/Sakhalin'), ('Asia/Samarkand'), ('Asia/Seoul'), ('Asia/Shanghai'), ('Asia/Singapore');
INSERT INTO zones (name) VALUES ('Asia/Srednekolymsk'), ('Asia/Taipei'), ('Asia/Tashkent'), ('Asia/Tbilisi'), ('Asia/Tehran'), ('Asia/Tel_Aviv'), ('Asia/Thimbu'), ('Asia/Thimphu');
INSERT INTO zones (name) VALUES ('Asia/Tokyo'), ('Asia/Tomsk'), ('Asia/Ujung_Pandang'), ('Asia/Ulaanbaatar'), ('Asia/Ulan_Bator'), ('Asia/Urumqi'), ('Asia/Ust-Nera'), ('Asia/Vientiane');
INSERT INTO zones (name) VALUES ('Asia/Vladivostok'), ('Asia/Yakutsk'), ('Asia/Yangon'), ('Asia/Yekaterinburg'), ('Asia/Yerevan'), ('Atlantic/Azores'), ('Atlantic/Bermuda'), ('Atlantic/Canary');
INSERT INTO zones (name) VALUES ('Atlantic/Cape_Verde'), ('Atlantic/Faeroe'), ('Atlantic/Faroe'), ('Atlantic/Jan_Mayen'), ('Atlantic/Madeira'), ('Atlantic/Reykjavik'), ('Atlantic/South_Georgia'), ('Atlantic/St_Helena');
INSERT INTO zones (name) VALUES ('Atlantic/Stanley'), ('Australia/ACT'), ('Australia/Adelaide'), ('Australia/Brisbane'), ('Australia/Broken_Hill'), ('Australia/Canberra'), ('Australia/Currie'), ('Australia/Darwin');
INSERT INTO zones (name) VALUES ('Australia/Eucla'), ('Australia/Hobart'), ('Australia/LHI'), ('Australia/Lindeman'), ('Australia/Lord_Howe'), ('Australia/Melbourne'), ('Australia/NSW'), ('Australia/North');
INSERT INTO zones (name) VALUES ('Australia/Perth'), ('Australia/Queensland'), ('Australia/South'), ('Australia/Sydney'), ('Australia/Tasmania'), ('Australia/Victoria'), ('Australia/West'), ('Australia/Yancowinna');
INSERT INTO zones (name) VALUES ('Brazil/Acre'), ('Brazil/DeNoronha'), ('Brazil/East'), ('Brazil/West'), ('CET'), ('CST6CDT'), ('Canada/Atlantic'), ('Canada/Central');
INSERT INTO zones (name) VALUES ('Canada/Eastern'), ('Canada/Mountain'), ('Canada/Newfoundland'), ('Canada/Pacific'), ('Canada/Saskatchewan'), ('Canada/Yukon'), ('Chile/Continental'), ('Chile/EasterIsland');
INSERT INTO zones (name) VALUES ('Cuba'), ('EET'), ('EST'), ('EST5EDT'), ('Egypt'), ('Eire'), ('Etc/GMT'), ('Etc/GMT+0');
INSERT INTO zones (name) VALUES ('Etc/GMT+1'), ('Etc/GMT+10'), ('Etc/GMT+11'), ('Etc/GMT+12'), ('Etc/GMT+2'), ('Etc/GMT+3'), ('Etc/GMT+4'), ('Etc/GMT+5');
INSERT INTO zones (name) VALUES ('Etc/GMT+6'), ('Etc/GMT+7'), ('Etc/GMT+8'), ('Etc/GMT+9'), ('Etc/GMT-0'), ('Etc/GMT-1'), ('Etc/GMT-10'), ('Etc/GMT-11');
INSERT INTO zones (name) VALUES ('Etc/GMT-12'), ('Etc/GMT-13'), ('Etc/GMT-14'), ('Etc/GMT-2'), ('Etc/GMT-3'), ('Etc/GMT-4'), ('Etc/GMT-5'), ('Etc/GMT-6');
INSERT INTO zones (name) VALUES ('Etc/GMT-7'), ('Etc/GMT-8'), ('Etc/GMT-9'), ('Etc/GMT0'), ('Etc/Greenwich'), ('Etc/UCT'), ('Etc/UTC'), ('Etc/Universal');
INSERT INTO zones (name) VALUES ('Etc/Zulu'), ('Europe/Amsterdam'), ('Europe/Andorra'), ('Europe/Astrakhan'), ('Europe/Athens'), ('Europe/Belfast'), ('Europe/Belgrade'), ('Europe/Berlin');
INSERT INTO zones (name) VALUES ('Europe/Bratislava'), ('Europe/Brussels'), ('Europe/Bucharest'), ('Europe/Budapest'), ('Europe/Busingen'), ('Europe/Chisinau'), ('Europe/Copenhagen'), ('Europe/Dublin');
INSERT INTO zones (name) VALUES ('Europe/Gibraltar'), ('Europe/Guernsey'), ('Europe/Helsinki'), ('Europe/Isle_of_Man'), ('Europe/Istanbul'), ('Europe/Jersey'), ('Europe/Kaliningrad'), ('Europe/Kiev');
INSERT INTO zones (name) VALUES ('Europe/Kirov'), ('Europe/Kyiv'), ('Europe/Lisbon'), ('Europe/Ljubljana'), ('Europe/London'), ('Europe/Luxembourg'), ('Europe/Madrid'), ('Europe/Malta');
INSERT INTO zones (name) VALUES ('Europe/Mariehamn'), ('Europe/Minsk'), ('Europe/Monaco'), ('Europe/Moscow'), ('Europe/Nicosia'), ('Europe/Oslo'), ('Europe/Paris'), ('Europe/Podgorica');
INSERT INTO zones (name) VALUES ('Europe/Prague'), ('Europe/Riga'), ('Europe/Rome'), ('Europe/Samara'), ('Europe/San_Marino'), ('Europe/Sarajevo'), ('Europe/Saratov'), ('Europe/Simferopol');
INSERT INTO zones (name) VALUES ('Europe/Skopje'), ('Europe/Sofia'), ('Europe/Stockholm'), ('Europe/Tallinn'), ('Europe/Tirane'), ('Europe/Tiraspol'), ('Europe/Ulyanovsk'), ('Europe/Uzhgorod');
INSERT INTO zones (name) VALUES ('Europe/Vaduz'), ('Europe/Vatican'), ('Europe/Vienna'), ('Europe/Vilnius'), ('Europe/Volgograd'), ('Europe/Warsaw'), ('Europe/Zagreb'), ('Europe/Zaporozhye');
INSERT INTO zones (name) VALUES ('Europe/Zurich'), ('GB'), ('GB-Eire'), ('GMT'), ('GMT+0'), ('GMT-0'), ('GMT0'), ('Greenwich');
INSERT INTO zones (name) VALUES ('HST'), ('Hongkong'), ('Iceland'), ('Indian/Antananarivo'), ('Indian/Chagos'), ('Indian/Christmas'), ('Indian/Cocos'), ('Indian/Comoro');
INSERT INTO zones (name) VALUES ('Indian/Kerguelen'), ('Indian/Mahe'), ('Indian/Maldives'), ('Indian/Mauritius'), ('Indian/Mayotte'), ('Indian/Reunion'), ('Iran'), ('Israel');
INSERT INTO zones (name) VALUES ('Jamaica'), ('Japan'), ('Kwajalein'), ('Libya'), ('MET'), ('MST'), ('MST7MDT'), ('Mexico/BajaNorte');
INSERT INTO zones (name) VALUES ('Mexico/BajaSur'), ('Mexico/General'), ('NZ'), ('NZ-CHAT'), ('Navajo'), ('PRC'), ('PST8PDT'), ('Pacific/Apia');
INSERT INTO zones (name) VALUES ('Pacific/Auckland'), ('Pacific/Bougainville'), ('Pacific/Chatham'), ('Pacific/Chuuk'), ('Pacific/Easter'), ('Pacific/Efate'), ('Pacific/Enderbury'), ('Pacific/Fakaofo');
INSERT INTO zones (name) VALUES ('Pacific/Fiji'), ('Pacific/Funafuti'), ('Pacific/Galapagos'), ('Pacific/Gambier'), ('Pacific/Guadalcanal'), ('Pacific/Guam'), ('Pacific/Honolulu'), ('Pacific/Johnston');
INSERT INTO zones (name) VALUES ('Pacific/Kanton'), ('Pacific/Kiritimati'), ('Pacific/Kosrae'), ('Pacific/Kwajalein'), ('Pacific/Majuro'), ('Pacific/Marquesas'), ('Pacific/Midway'), ('Pacific/Nauru');
INSERT INTO zones (name) VALUES ('Pacific/Niue'), ('Pacific/Norfolk'), ('Pacific/Noumea'), ('Pacific/Pago_Pago'), ('Pacific/Palau'), ('Pacific/Pitcairn'), ('Pacific/Pohnpei'), ('Pacific/Ponape');
INSERT INTO zones (name) VALUES ('Pacific/Port_Moresby'), ('Pacific/Rarotonga'), ('Pacific/Saipan'), ('Pacific/Samoa'), ('Pacific/Tahiti'), ('Pacific/Tarawa'), ('Pacific/Tongatapu'), ('Pacific/Truk');
INSERT INTO zones (name) VALUES ('Pacific/Wake'), ('Pacific/Wallis'), ('Pacific/Yap'), ('Poland'), ('Portugal'), ('ROC'), ('ROK'), ('Singapore');
INSERT INTO zones (name) VALUES ('Turkey'), ('UCT'), ('US/Alaska'), ('US/Aleutian'), ('US/Arizona'), ('US/Central'), ('US/East-Indiana'), ('US/Eastern');
INSERT INTO zones (name) VALUES ('US/Hawaii'), ('US/Indiana-Starke'), ('US/Michigan'), ('US/Mountain'), ('US/Pacific'), ('US/Samoa'), ('UTC'), ('Universal');
INSERT INTO zones (name) VALUES ('W-SU'), ('WET'), ('Zulu');

-- Rows written before V5 carry no hash: the chain starts after `through_id`.
CREATE TABLE integrity_legacy (
    tbl        TEXT    PRIMARY KEY CHECK (tbl IN ('audit_log', 'job_events')),
    through_id INTEGER NOT NULL CHECK (through_id >= 0)
) STRICT;


CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id        TEXT    NOT NULL CHECK (length(CAST(user_id AS BLOB)) BETWEEN 1 AND 256 AND instr(CAST(user_id AS BLOB), x'00') = 0 AND user_id NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*'),
    kind           TEXT    NOT NULL CHECK (length(CAST(kind AS BLOB)) BETWEEN 1 AND 64 AND instr(CAST(kind AS BLOB), x'00') = 0 AND kind NOT GLOB '*[^A-Za-z0-9_.:-]*'),
    state          TEXT    NOT NULL DEFAULT 'created'
                   CHECK (state IN ('created', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    input          TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(input) AND length(CAST(input AS BLOB)) <= 4194304),
    result         TEXT    CHECK (result IS NULL OR (json_valid(result) AND length(CAST(result AS BLOB)) <= 4194304)),
    error_code     TEXT    CHECK (error_code IS NULL OR (length(CAST(error_code AS BLOB)) BETWEEN 1 AND 64 AND instr(CAST(error_code AS BLOB), x'00') = 0 AND error_code NOT GLOB '*[^A-Za-z0-9_.:-]*')),
    error_message  TEXT    CHECK (error_message IS NULL OR instr(CAST(error_message AS BLOB), x'00') = 0),
    progress       INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    step           TEXT    CHECK (step IS NULL OR length(CAST(step AS BLOB)) BETWEEN 0 AND 256 AND instr(CAST(step AS BLOB), x'00') = 0),
    checkpoint     TEXT    CHECK (checkpoint IS NULL OR json_valid(checkpoint)),
    checkpoint_at  TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', checkpoint_at, '+0 seconds') IS checkpoint_at),
    tags           TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(tags) AND json_type(tags) = 'array' AND json_array_length(tags) <= 32),
    parent_id      INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    timeout_ms     INTEGER CHECK (timeout_ms IS NULL OR timeout_ms > 0),
    max_retries    INTEGER NOT NULL DEFAULT 0 CHECK (max_retries >= 0),
    attempt        INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    worker_id      TEXT    CHECK (worker_id IS NULL OR (length(CAST(worker_id AS BLOB)) BETWEEN 1 AND 256 AND instr(CAST(worker_id AS BLOB), x'00') = 0 AND worker_id NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*')),
    recovery_count INTEGER NOT NULL DEFAULT 0 CHECK (recovery_count >= 0),
    created_at     TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', created_at, '+0 seconds') IS created_at),
    updated_at     TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', updated_at, '+0 seconds') IS updated_at),
    started_at     TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', started_at, '+0 seconds') IS started_at),
    heartbeat_at   TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', heartbeat_at, '+0 seconds') IS heartbeat_at),
    finished_at    TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', finished_at, '+0 seconds') IS finished_at),
    CHECK (parent_id IS NULL OR parent_id <> id),
    -- timestamps agree with the state
    CHECK ((state IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CHECK (finished_at IS NULL OR finished_at >= created_at),
    CHECK (state NOT IN ('running', 'paused', 'completed') OR started_at IS NOT NULL),
    CHECK (state <> 'created' OR (started_at IS NULL AND heartbeat_at IS NULL AND worker_id IS NULL)),
    CHECK (state <> 'running' OR (heartbeat_at IS NOT NULL AND worker_id IS NOT NULL AND attempt > 0)),
    CHECK (started_at IS NULL OR started_at >= created_at),
    -- outcome columns agree with the state
    CHECK (state = 'completed' OR result IS NULL),
    CHECK (state <> 'completed' OR progress = 100),
    CHECK ((state = 'failed') = (error_code IS NOT NULL)),
    CHECK ((checkpoint IS NULL) = (checkpoint_at IS NULL))
) STRICT;


CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    entity    TEXT    NOT NULL CHECK (entity IN ('job', 'run', 'schedule', 'supervisor')),
    entity_id TEXT    NOT NULL CHECK (length(CAST(entity_id AS BLOB)) BETWEEN 1 AND 256 AND instr(CAST(entity_id AS BLOB), x'00') = 0 AND entity_id NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*'),
    action    TEXT    NOT NULL CHECK (length(CAST(action AS BLOB)) BETWEEN 1 AND 64 AND instr(CAST(action AS BLOB), x'00') = 0 AND action NOT GLOB '*[^A-Za-z0-9_.:-]*'),
    actor     TEXT    NOT NULL CHECK (length(CAST(actor AS BLOB)) BETWEEN 1 AND 256 AND instr(CAST(actor AS BLOB), x'00') = 0 AND actor NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*'),
    at        TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', at, '+0 seconds') IS at),
    detail    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(detail) AND json_type(detail) = 'object'),
    -- SHA-256 over the previous row's hash and this row's content (src/integrity.rs);
    -- NULL only for rows written before V5 (integrity_legacy).
    hash      TEXT    CHECK (hash IS NULL OR (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*'))
) STRICT;

CREATE TABLE job_events (
    cursor    INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id    INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL CHECK (seq >= 1),
    kind      TEXT    NOT NULL CHECK (kind IN ('created', 'claimed', 'progress', 'checkpoint', 'paused',
                                               'resumed', 'recovered', 'completed', 'failed', 'cancelled',
                                               'restarted')),
    payload   TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(payload) AND json_type(payload) = 'object'),
    at        TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', at, '+0 seconds') IS at),
    -- the hash of the job's previous event (seq - 1) and this event's hash (src/integrity.rs);
    -- NULL only for events written before V5 (integrity_legacy).
    prev_hash TEXT    CHECK (prev_hash IS NULL OR (length(prev_hash) = 64 AND prev_hash NOT GLOB '*[^0-9a-f]*')),
    hash      TEXT    CHECK (hash IS NULL OR (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*')),
    CHECK ((hash IS NULL) = (prev_hash IS NULL)),
    UNIQUE (job_id, seq)
) STRICT;

CREATE TABLE supervisor_state (
    name            TEXT    PRIMARY KEY CHECK (length(CAST(name AS BLOB)) BETWEEN 1 AND 256 AND instr(CAST(name AS BLOB), x'00') = 0 AND name NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*'),
    last_tick_at    TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', last_tick_at, '+0 seconds') IS last_tick_at),
    ticks           INTEGER NOT NULL DEFAULT 0 CHECK (ticks >= 0),
    jobs_recovered  INTEGER NOT NULL DEFAULT 0 CHECK (jobs_recovered >= 0),
    jobs_failed     INTEGER NOT NULL DEFAULT 0 CHECK (jobs_failed >= 0)
) STRICT;

CREATE TABLE ingest_runs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline         TEXT    NOT NULL CHECK (length(CAST(pipeline AS BLOB)) BETWEEN 1 AND 64 AND instr(CAST(pipeline AS BLOB), x'00') = 0 AND pipeline NOT GLOB '*[^A-Za-z0-9_.-]*'),
    scope            TEXT    NOT NULL CHECK (scope IN ('targets', 'universe')),
    trigger          TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    status           TEXT    NOT NULL DEFAULT 'started'
                     CHECK (status IN ('started', 'success', 'failed')),
    -- Invariant 3: at most one started run per lock key, and the key is exactly the
    -- engine's `pipeline:scope[:account]`, so no second spelling escapes the unique index.
    lock_key         TEXT    NOT NULL CHECK (lock_key = pipeline || ':' || scope || coalesce(':' || account_id, '')),
    account_id       TEXT    CHECK (account_id IS NULL OR (length(CAST(account_id AS BLOB)) BETWEEN 1 AND 128 AND instr(CAST(account_id AS BLOB), x'00') = 0 AND account_id NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*')),
    started_at       TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', started_at, '+0 seconds') IS started_at),
    lease_expires_at TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', lease_expires_at, '+0 seconds') IS lease_expires_at),
    finished_at      TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', finished_at, '+0 seconds') IS finished_at),
    duration_ms      INTEGER CHECK (duration_ms IS NULL OR duration_ms >= 0),
    error_code       TEXT    CHECK (error_code IS NULL OR (length(CAST(error_code AS BLOB)) BETWEEN 1 AND 64 AND instr(CAST(error_code AS BLOB), x'00') = 0 AND error_code NOT GLOB '*[^A-Za-z0-9_.:-]*')),
    error_message    TEXT    CHECK (error_message IS NULL OR instr(CAST(error_message AS BLOB), x'00') = 0),
    timeline         TEXT    NOT NULL DEFAULT '[]'
                     CHECK (json_valid(timeline) AND json_type(timeline) = 'array'),
    meta_json        TEXT    NOT NULL DEFAULT '{}'
                     CHECK (json_valid(meta_json) AND json_type(meta_json) = 'object'),
    -- Invariant 2: timestamps agree with the state.
    CHECK ((status = 'started') = (finished_at IS NULL)),
    CHECK ((finished_at IS NULL) = (duration_ms IS NULL)),
    CHECK (finished_at IS NULL OR finished_at >= started_at),
    CHECK (duration_ms IS NULL OR duration_ms IS
           CAST(round((julianday(finished_at) - julianday(started_at)) * 86400000) AS INTEGER)),
    CHECK (status <> 'started' OR lease_expires_at IS NOT NULL),
    CHECK (lease_expires_at IS NULL OR lease_expires_at >= started_at),
    -- Outcome columns agree with the state.
    CHECK ((status = 'failed') = (error_code IS NOT NULL)),
    CHECK (status = 'failed' OR error_message IS NULL),
    -- meta_json: what the orchestrator writes (source, scope) agrees with the columns, and a
    -- blocked run says where, with its error code.
    CHECK (json_type(meta_json, '$.source') IS NULL OR json_extract(meta_json, '$.source') IS trigger),
    CHECK (json_type(meta_json, '$.scope') IS NULL OR json_extract(meta_json, '$.scope') IS scope),
    CHECK (json_type(meta_json, '$.blockedStage') IS NULL
           OR (status = 'failed' AND json_type(meta_json, '$.blockedStage') = 'text'
               AND json_extract(meta_json, '$.errorCode') IS error_code
               AND json_type(meta_json, '$.source') = 'text' AND json_type(meta_json, '$.scope') = 'text'))
) STRICT;

CREATE TABLE ingest_modules (
    module     TEXT    PRIMARY KEY CHECK (length(CAST(module AS BLOB)) BETWEEN 1 AND 64 AND instr(CAST(module AS BLOB), x'00') = 0 AND module NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*'),
    domain     TEXT    NOT NULL CHECK (length(CAST(domain AS BLOB)) BETWEEN 1 AND 64 AND instr(CAST(domain AS BLOB), x'00') = 0 AND domain NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*'),
    scopes     TEXT    NOT NULL DEFAULT '["targets","universe"]'
               CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
    enabled    INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    updated_at TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', updated_at, '+0 seconds') IS updated_at)
) STRICT;

CREATE TABLE ingest_probes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    module     TEXT    NOT NULL REFERENCES ingest_modules(module) ON DELETE CASCADE,
    status     TEXT    NOT NULL CHECK (status IN ('ok', 'failed')),
    code       TEXT    CHECK (code IS NULL OR (length(CAST(code AS BLOB)) BETWEEN 1 AND 64 AND instr(CAST(code AS BLOB), x'00') = 0 AND code NOT GLOB '*[^A-Za-z0-9_.:-]*')),
    message    TEXT    CHECK (message IS NULL OR instr(CAST(message AS BLOB), x'00') = 0),
    -- at most a day: a probe is a connectivity test
    latency_ms INTEGER NOT NULL CHECK (latency_ms BETWEEN 0 AND 86400000),
    tested_at  TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', tested_at, '+0 seconds') IS tested_at),
    CHECK ((status = 'failed') = (code IS NOT NULL))
) STRICT;

CREATE TABLE raw_payloads (
    sha256  TEXT    PRIMARY KEY
            CHECK (length(CAST(sha256 AS BLOB)) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    size    INTEGER NOT NULL CHECK (size >= 0),
    payload BLOB    NOT NULL CHECK (length(payload) = size)
) STRICT;

CREATE TABLE raw_records (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        INTEGER NOT NULL REFERENCES ingest_runs(id) DEFERRABLE INITIALLY DEFERRED,
    source        TEXT    NOT NULL CHECK (length(CAST(source AS BLOB)) BETWEEN 1 AND 64 AND instr(CAST(source AS BLOB), x'00') = 0 AND source NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*'),
    upstream_ref  TEXT    CHECK (upstream_ref IS NULL OR (length(CAST(upstream_ref AS BLOB)) BETWEEN 1 AND 512 AND instr(CAST(upstream_ref AS BLOB), x'00') = 0 AND upstream_ref NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*')),
    content_type  TEXT    NOT NULL CHECK (length(CAST(content_type AS BLOB)) BETWEEN 1 AND 128 AND instr(CAST(content_type AS BLOB), x'00') = 0 AND content_type NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*'),
    size          INTEGER NOT NULL CHECK (size >= 0),
    sha256        TEXT    NOT NULL REFERENCES raw_payloads(sha256),
    created_at    TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', created_at, '+0 seconds') IS created_at)
) STRICT;


CREATE TABLE schedules (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE CHECK (length(CAST(name AS BLOB)) BETWEEN 1 AND 64 AND instr(CAST(name AS BLOB), x'00') = 0 AND name NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*'),
    pipeline    TEXT    NOT NULL CHECK (length(CAST(pipeline AS BLOB)) BETWEEN 1 AND 64 AND instr(CAST(pipeline AS BLOB), x'00') = 0 AND pipeline NOT GLOB '*[^A-Za-z0-9_.-]*'),
    scope       TEXT    NOT NULL CHECK (scope IN ('targets', 'universe', 'both')),
    -- the canonical text of src/schedule/rule.rs, exactly: `daily 19:30`, `daily 19:30 mon-fri`
    -- (weekday runs in Monday-first order, never all seven), `every 15m` (1..10080 minutes,
    -- whole hours written `every Nh`, 1..168).
    rule        TEXT    NOT NULL CHECK (instr(CAST(rule AS BLOB), x'00') = 0 AND (
                   ((substr(rule, 1, 11) GLOB 'daily [01][0-9]:[0-5][0-9]' OR substr(rule, 1, 11) GLOB 'daily 2[0-3]:[0-5][0-9]')
                    AND (length(rule) = 11 OR (substr(rule, 12, 1) = ' ' AND substr(rule, 13) IN ('mon', 'tue', 'mon-tue', 'wed', 'mon,wed', 'tue-wed', 'mon-wed', 'thu', 'mon,thu', 'tue,thu', 'mon-tue,thu', 'wed-thu', 'mon,wed-thu', 'tue-thu', 'mon-thu', 'fri', 'mon,fri', 'tue,fri', 'mon-tue,fri', 'wed,fri', 'mon,wed,fri', 'tue-wed,fri', 'mon-wed,fri', 'thu-fri', 'mon,thu-fri', 'tue,thu-fri', 'mon-tue,thu-fri', 'wed-fri', 'mon,wed-fri', 'tue-fri', 'mon-fri', 'sat', 'mon,sat', 'tue,sat', 'mon-tue,sat', 'wed,sat', 'mon,wed,sat', 'tue-wed,sat', 'mon-wed,sat', 'thu,sat', 'mon,thu,sat', 'tue,thu,sat', 'mon-tue,thu,sat', 'wed-thu,sat', 'mon,wed-thu,sat', 'tue-thu,sat', 'mon-thu,sat', 'fri-sat', 'mon,fri-sat', 'tue,fri-sat', 'mon-tue,fri-sat', 'wed,fri-sat', 'mon,wed,fri-sat', 'tue-wed,fri-sat', 'mon-wed,fri-sat', 'thu-sat', 'mon,thu-sat', 'tue,thu-sat', 'mon-tue,thu-sat', 'wed-sat', 'mon,wed-sat', 'tue-sat', 'mon-sat', 'sun', 'mon,sun', 'tue,sun', 'mon-tue,sun', 'wed,sun', 'mon,wed,sun', 'tue-wed,sun', 'mon-wed,sun', 'thu,sun', 'mon,thu,sun', 'tue,thu,sun', 'mon-tue,thu,sun', 'wed-thu,sun', 'mon,wed-thu,sun', 'tue-thu,sun', 'mon-thu,sun', 'fri,sun', 'mon,fri,sun', 'tue,fri,sun', 'mon-tue,fri,sun', 'wed,fri,sun', 'mon,wed,fri,sun', 'tue-wed,fri,sun', 'mon-wed,fri,sun', 'thu-fri,sun', 'mon,thu-fri,sun', 'tue,thu-fri,sun', 'mon-tue,thu-fri,sun', 'wed-fri,sun', 'mon,wed-fri,sun', 'tue-fri,sun', 'mon-fri,sun', 'sat-sun', 'mon,sat-sun', 'tue,sat-sun', 'mon-tue,sat-sun', 'wed,sat-sun', 'mon,wed,sat-sun', 'tue-wed,sat-sun', 'mon-wed,sat-sun', 'thu,sat-sun', 'mon,thu,sat-sun', 'tue,thu,sat-sun', 'mon-tue,thu,sat-sun', 'wed-thu,sat-sun', 'mon,wed-thu,sat-sun', 'tue-thu,sat-sun', 'mon-thu,sat-sun', 'fri-sun', 'mon,fri-sun', 'tue,fri-sun', 'mon-tue,fri-sun', 'wed,fri-sun', 'mon,wed,fri-sun', 'tue-wed,fri-sun', 'mon-wed,fri-sun', 'thu-sun', 'mon,thu-sun', 'tue,thu-sun', 'mon-tue,thu-sun', 'wed-sun', 'mon,wed-sun', 'tue-sun'))))
                OR (rule GLOB 'every [1-9]*m' AND substr(rule, 7, length(rule) - 7) NOT GLOB '*[^0-9]*'
                    AND length(rule) <= 12 AND CAST(substr(rule, 7, length(rule) - 7) AS INTEGER) BETWEEN 1 AND 10080 AND CAST(substr(rule, 7, length(rule) - 7) AS INTEGER) % 60 <> 0)
                OR (rule GLOB 'every [1-9]*h' AND substr(rule, 7, length(rule) - 7) NOT GLOB '*[^0-9]*'
                    AND length(rule) <= 10 AND CAST(substr(rule, 7, length(rule) - 7) AS INTEGER) BETWEEN 1 AND 168))),
    -- IANA name, one of `zones`
    zone        TEXT    NOT NULL REFERENCES zones(name),
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    misfire     TEXT    NOT NULL DEFAULT 'latest_only' CHECK (misfire IN ('latest_only', 'all', 'skip')),
    last_due_at TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', last_due_at, '+0 seconds') IS last_due_at),
    next_due_at TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', next_due_at, '+0 seconds') IS next_due_at),
    created_at  TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', created_at, '+0 seconds') IS created_at),
    updated_at  TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', updated_at, '+0 seconds') IS updated_at),
    CHECK (updated_at >= created_at),
    CHECK (next_due_at IS NULL OR last_due_at IS NULL OR next_due_at > last_due_at)
) STRICT;

CREATE TABLE due_runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id     INTEGER NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    due_at          TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', due_at, '+0 seconds') IS due_at),
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'claimed', 'fired', 'skipped', 'failed')),
    created_at      TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', created_at, '+0 seconds') IS created_at),
    claimed_at      TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', claimed_at, '+0 seconds') IS claimed_at),
    claimed_by      TEXT    CHECK (claimed_by IS NULL OR (length(CAST(claimed_by AS BLOB)) BETWEEN 1 AND 256 AND instr(CAST(claimed_by AS BLOB), x'00') = 0 AND claimed_by NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*')),
    finished_at     TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', finished_at, '+0 seconds') IS finished_at),
    run_ids         TEXT    NOT NULL DEFAULT '[]'
                    CHECK (json_valid(run_ids) AND json_type(run_ids) = 'array'),
    outcome_code    TEXT    CHECK (outcome_code IS NULL OR (length(CAST(outcome_code AS BLOB)) BETWEEN 1 AND 64 AND instr(CAST(outcome_code AS BLOB), x'00') = 0 AND outcome_code NOT GLOB '*[^A-Za-z0-9_.:-]*')),
    outcome_message TEXT    CHECK (outcome_message IS NULL OR instr(CAST(outcome_message AS BLOB), x'00') = 0),
    UNIQUE (schedule_id, due_at),
    CHECK (created_at >= due_at),
    CHECK (claimed_at IS NULL OR claimed_at >= created_at),
    CHECK (finished_at IS NULL OR finished_at >= created_at),
    CHECK (finished_at IS NULL OR claimed_at IS NULL OR finished_at >= claimed_at),
    CHECK ((status IN ('fired', 'skipped', 'failed')) = (finished_at IS NOT NULL)),
    CHECK ((claimed_at IS NULL) = (claimed_by IS NULL)),
    CHECK (status <> 'pending' OR claimed_at IS NULL),
    CHECK (status NOT IN ('claimed', 'fired', 'failed') OR claimed_at IS NOT NULL),
    CHECK (status IN ('fired', 'skipped', 'failed') OR (run_ids = '[]' AND outcome_code IS NULL)),
    CHECK (status <> 'fired' OR (json_array_length(run_ids) > 0 AND outcome_code IS NULL)),
    CHECK ((status IN ('skipped', 'failed')) = (outcome_code IS NOT NULL)),
    CHECK (outcome_message IS NULL OR outcome_code IS NOT NULL)
) STRICT;


-- 4. Copy every row (a row of the wrong type or breaking a CHECK is left behind, then named).
INSERT OR IGNORE INTO jobs (id, user_id, kind, state, input, result, error_code, error_message, progress, step, checkpoint, checkpoint_at, tags, parent_id, timeout_ms, max_retries, attempt, worker_id, recovery_count, created_at, updated_at, started_at, heartbeat_at, finished_at)
    SELECT id, user_id, kind, state, input, result, error_code, error_message, progress, step, checkpoint, checkpoint_at, tags, parent_id, timeout_ms, max_retries, attempt, worker_id, recovery_count, created_at, updated_at, started_at, heartbeat_at, finished_at FROM jobs_v4
    WHERE typeof(id) IN ('integer', 'null') AND typeof(user_id) IN ('text', 'null') AND typeof(kind) IN ('text', 'null') AND typeof(state) IN ('text', 'null') AND typeof(input) IN ('text', 'null') AND typeof(result) IN ('text', 'null') AND typeof(error_code) IN ('text', 'null') AND typeof(error_message) IN ('text', 'null') AND typeof(progress) IN ('integer', 'null') AND typeof(step) IN ('text', 'null') AND typeof(checkpoint) IN ('text', 'null') AND typeof(checkpoint_at) IN ('text', 'null') AND typeof(tags) IN ('text', 'null') AND typeof(parent_id) IN ('integer', 'null') AND typeof(timeout_ms) IN ('integer', 'null') AND typeof(max_retries) IN ('integer', 'null') AND typeof(attempt) IN ('integer', 'null') AND typeof(worker_id) IN ('text', 'null') AND typeof(recovery_count) IN ('integer', 'null') AND typeof(created_at) IN ('text', 'null') AND typeof(updated_at) IN ('text', 'null') AND typeof(started_at) IN ('text', 'null') AND typeof(heartbeat_at) IN ('text', 'null') AND typeof(finished_at) IN ('text', 'null') AND (parent_id IS NULL OR parent_id IN (SELECT id FROM jobs_v4));
INSERT INTO v5_refused (tbl, id) SELECT 'jobs', quote(id) FROM jobs_v4
    WHERE id IS NULL OR id NOT IN (SELECT id FROM jobs) ORDER BY id LIMIT 1;
INSERT OR IGNORE INTO audit_log (id, entity, entity_id, action, actor, at, detail)
    SELECT id, entity, entity_id, action, actor, at, detail FROM audit_log_v4
    WHERE typeof(id) IN ('integer', 'null') AND typeof(entity) IN ('text', 'null') AND typeof(entity_id) IN ('text', 'null') AND typeof(action) IN ('text', 'null') AND typeof(actor) IN ('text', 'null') AND typeof(at) IN ('text', 'null') AND typeof(detail) IN ('text', 'null');
INSERT INTO v5_refused (tbl, id) SELECT 'audit_log', quote(id) FROM audit_log_v4
    WHERE id IS NULL OR id NOT IN (SELECT id FROM audit_log) ORDER BY id LIMIT 1;
INSERT OR IGNORE INTO job_events (cursor, job_id, seq, kind, payload, at)
    SELECT cursor, job_id, seq, kind, payload, at FROM job_events_v4
    WHERE typeof(cursor) IN ('integer', 'null') AND typeof(job_id) IN ('integer', 'null') AND typeof(seq) IN ('integer', 'null') AND typeof(kind) IN ('text', 'null') AND typeof(payload) IN ('text', 'null') AND typeof(at) IN ('text', 'null') AND job_id IN (SELECT id FROM jobs);
INSERT INTO v5_refused (tbl, id) SELECT 'job_events', quote(cursor) FROM job_events_v4
    WHERE cursor IS NULL OR cursor NOT IN (SELECT cursor FROM job_events) ORDER BY cursor LIMIT 1;
INSERT OR IGNORE INTO supervisor_state (name, last_tick_at, ticks, jobs_recovered, jobs_failed)
    SELECT name, last_tick_at, ticks, jobs_recovered, jobs_failed FROM supervisor_state_v4
    WHERE typeof(name) IN ('text', 'null') AND typeof(last_tick_at) IN ('text', 'null') AND typeof(ticks) IN ('integer', 'null') AND typeof(jobs_recovered) IN ('integer', 'null') AND typeof(jobs_failed) IN ('integer', 'null');
INSERT INTO v5_refused (tbl, id) SELECT 'supervisor_state', quote(name) FROM supervisor_state_v4
    WHERE name IS NULL OR name NOT IN (SELECT name FROM supervisor_state) ORDER BY name LIMIT 1;
INSERT OR IGNORE INTO ingest_runs (id, pipeline, scope, trigger, status, lock_key, account_id, started_at, lease_expires_at, finished_at, duration_ms, error_code, error_message, timeline, meta_json)
    SELECT id, pipeline, scope, trigger, status, lock_key, account_id, started_at, lease_expires_at, finished_at, duration_ms, error_code, error_message, timeline, meta_json FROM ingest_runs_v4
    WHERE typeof(id) IN ('integer', 'null') AND typeof(pipeline) IN ('text', 'null') AND typeof(scope) IN ('text', 'null') AND typeof(trigger) IN ('text', 'null') AND typeof(status) IN ('text', 'null') AND typeof(lock_key) IN ('text', 'null') AND typeof(account_id) IN ('text', 'null') AND typeof(started_at) IN ('text', 'null') AND typeof(lease_expires_at) IN ('text', 'null') AND typeof(finished_at) IN ('text', 'null') AND typeof(duration_ms) IN ('integer', 'null') AND typeof(error_code) IN ('text', 'null') AND typeof(error_message) IN ('text', 'null') AND typeof(timeline) IN ('text', 'null') AND typeof(meta_json) IN ('text', 'null');
INSERT INTO v5_refused (tbl, id) SELECT 'ingest_runs', quote(id) FROM ingest_runs_v4
    WHERE id IS NULL OR id NOT IN (SELECT id FROM ingest_runs) ORDER BY id LIMIT 1;
INSERT OR IGNORE INTO ingest_modules (module, domain, scopes, enabled, updated_at)
    SELECT module, domain, scopes, enabled, updated_at FROM ingest_modules_v4
    WHERE typeof(module) IN ('text', 'null') AND typeof(domain) IN ('text', 'null') AND typeof(scopes) IN ('text', 'null') AND typeof(enabled) IN ('integer', 'null') AND typeof(updated_at) IN ('text', 'null');
INSERT INTO v5_refused (tbl, id) SELECT 'ingest_modules', quote(module) FROM ingest_modules_v4
    WHERE module IS NULL OR module NOT IN (SELECT module FROM ingest_modules) ORDER BY module LIMIT 1;
INSERT OR IGNORE INTO ingest_probes (id, module, status, code, message, latency_ms, tested_at)
    SELECT id, module, status, code, message, latency_ms, tested_at FROM ingest_probes_v4
    WHERE typeof(id) IN ('integer', 'null') AND typeof(module) IN ('text', 'null') AND typeof(status) IN ('text', 'null') AND typeof(code) IN ('text', 'null') AND typeof(message) IN ('text', 'null') AND typeof(latency_ms) IN ('integer', 'null') AND typeof(tested_at) IN ('text', 'null') AND module IN (SELECT module FROM ingest_modules);
INSERT INTO v5_refused (tbl, id) SELECT 'ingest_probes', quote(id) FROM ingest_probes_v4
    WHERE id IS NULL OR id NOT IN (SELECT id FROM ingest_probes) ORDER BY id LIMIT 1;
INSERT OR IGNORE INTO raw_payloads (sha256, size, payload)
    SELECT sha256, size, payload FROM raw_payloads_v4
    WHERE typeof(sha256) IN ('text', 'null') AND typeof(size) IN ('integer', 'null') AND typeof(payload) = 'blob';
INSERT INTO v5_refused (tbl, id) SELECT 'raw_payloads', quote(sha256) FROM raw_payloads_v4
    WHERE sha256 IS NULL OR sha256 NOT IN (SELECT sha256 FROM raw_payloads) ORDER BY sha256 LIMIT 1;
INSERT OR IGNORE INTO raw_records (id, run_id, source, upstream_ref, content_type, size, sha256, created_at)
    SELECT id, run_id, source, upstream_ref, content_type, size, sha256, created_at FROM raw_records_v4
    WHERE typeof(id) IN ('integer', 'null') AND typeof(run_id) IN ('integer', 'null') AND typeof(source) IN ('text', 'null') AND typeof(upstream_ref) IN ('text', 'null') AND typeof(content_type) IN ('text', 'null') AND typeof(size) IN ('integer', 'null') AND typeof(sha256) IN ('text', 'null') AND typeof(created_at) IN ('text', 'null') AND sha256 IN (SELECT sha256 FROM raw_payloads) AND run_id IN (SELECT id FROM ingest_runs);
INSERT INTO v5_refused (tbl, id) SELECT 'raw_records', quote(id) FROM raw_records_v4
    WHERE id IS NULL OR id NOT IN (SELECT id FROM raw_records) ORDER BY id LIMIT 1;
INSERT OR IGNORE INTO schedules (id, name, pipeline, scope, rule, zone, enabled, misfire, last_due_at, next_due_at, created_at, updated_at)
    SELECT id, name, pipeline, scope, rule, zone, enabled, misfire, last_due_at, next_due_at, created_at, updated_at FROM schedules_v4
    WHERE typeof(id) IN ('integer', 'null') AND typeof(name) IN ('text', 'null') AND typeof(pipeline) IN ('text', 'null') AND typeof(scope) IN ('text', 'null') AND typeof(rule) IN ('text', 'null') AND typeof(zone) IN ('text', 'null') AND typeof(enabled) IN ('integer', 'null') AND typeof(misfire) IN ('text', 'null') AND typeof(last_due_at) IN ('text', 'null') AND typeof(next_due_at) IN ('text', 'null') AND typeof(created_at) IN ('text', 'null') AND typeof(updated_at) IN ('text', 'null') AND zone IN (SELECT name FROM zones);
INSERT INTO v5_refused (tbl, id) SELECT 'schedules', quote(id) FROM schedules_v4
    WHERE id IS NULL OR id NOT IN (SELECT id FROM schedules) ORDER BY id LIMIT 1;
INSERT OR IGNORE INTO due_runs (id, schedule_id, due_at, status, created_at, claimed_at, claimed_by, finished_at, run_ids, outcome_code, outcome_message)
    SELECT id, schedule_id, due_at, status, created_at, claimed_at, claimed_by, finished_at, run_ids, outcome_code, outcome_message FROM due_runs_v4
    WHERE typeof(id) IN ('integer', 'null') AND typeof(schedule_id) IN ('integer', 'null') AND typeof(due_at) IN ('text', 'null') AND typeof(status) IN ('text', 'null') AND typeof(created_at) IN ('text', 'null') AND typeof(claimed_at) IN ('text', 'null') AND typeof(claimed_by) IN ('text', 'null') AND typeof(finished_at) IN ('text', 'null') AND typeof(run_ids) IN ('text', 'null') AND typeof(outcome_code) IN ('text', 'null') AND typeof(outcome_message) IN ('text', 'null') AND schedule_id IN (SELECT id FROM schedules);
INSERT INTO v5_refused (tbl, id) SELECT 'due_runs', quote(id) FROM due_runs_v4
    WHERE id IS NULL OR id NOT IN (SELECT id FROM due_runs) ORDER BY id LIMIT 1;
-- references the V4 foreign keys did not enforce with foreign keys off
INSERT INTO v5_refused (tbl, id) SELECT 'job_events', cursor FROM job_events
    WHERE job_id NOT IN (SELECT id FROM jobs) ORDER BY cursor LIMIT 1;
INSERT INTO v5_refused (tbl, id) SELECT 'jobs', id FROM jobs
    WHERE parent_id IS NOT NULL AND parent_id NOT IN (SELECT id FROM jobs) ORDER BY id LIMIT 1;
INSERT INTO v5_refused (tbl, id) SELECT 'ingest_probes', id FROM ingest_probes
    WHERE module NOT IN (SELECT module FROM ingest_modules) ORDER BY id LIMIT 1;
INSERT INTO v5_refused (tbl, id) SELECT 'raw_records', id FROM raw_records
    WHERE sha256 NOT IN (SELECT sha256 FROM raw_payloads) ORDER BY id LIMIT 1;
INSERT INTO v5_refused (tbl, id) SELECT 'due_runs', id FROM due_runs
    WHERE schedule_id NOT IN (SELECT id FROM schedules) ORDER BY id LIMIT 1;
INSERT INTO v5_refused (tbl, id) SELECT 'ingest_modules', quote(module) FROM ingest_modules
    WHERE EXISTS (SELECT 1 FROM json_each(scopes) WHERE type <> 'text' OR value NOT IN ('targets', 'universe'))
    ORDER BY module LIMIT 1;
INSERT INTO v5_refused (tbl, id) SELECT 'jobs', id FROM jobs
    WHERE EXISTS (SELECT 1 FROM json_each(tags) WHERE type <> 'text' OR length(CAST(value AS BLOB)) NOT BETWEEN 1 AND 64)
    ORDER BY id LIMIT 1;

-- The AUTOINCREMENT high-water marks carry over, so no id is ever handed out twice.

INSERT INTO sqlite_sequence (name, seq) SELECT 'jobs', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'jobs');
UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'jobs_v4'), 0)) WHERE name = 'jobs';
INSERT INTO sqlite_sequence (name, seq) SELECT 'audit_log', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'audit_log');
UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'audit_log_v4'), 0)) WHERE name = 'audit_log';
INSERT INTO sqlite_sequence (name, seq) SELECT 'job_events', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'job_events');
UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'job_events_v4'), 0)) WHERE name = 'job_events';
INSERT INTO sqlite_sequence (name, seq) SELECT 'ingest_runs', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'ingest_runs');
UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'ingest_runs_v4'), 0)) WHERE name = 'ingest_runs';
INSERT INTO sqlite_sequence (name, seq) SELECT 'ingest_probes', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'ingest_probes');
UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'ingest_probes_v4'), 0)) WHERE name = 'ingest_probes';
INSERT INTO sqlite_sequence (name, seq) SELECT 'raw_records', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'raw_records');
UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'raw_records_v4'), 0)) WHERE name = 'raw_records';
INSERT INTO sqlite_sequence (name, seq) SELECT 'schedules', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'schedules');
UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'schedules_v4'), 0)) WHERE name = 'schedules';
INSERT INTO sqlite_sequence (name, seq) SELECT 'due_runs', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'due_runs');
UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'due_runs_v4'), 0)) WHERE name = 'due_runs';
INSERT INTO integrity_legacy (tbl, through_id)
    VALUES ('audit_log', (SELECT seq FROM sqlite_sequence WHERE name = 'audit_log')),
           ('job_events', (SELECT seq FROM sqlite_sequence WHERE name = 'job_events'));

-- 5. The V4 tables go, children first.
DROP TABLE due_runs_v4;
DROP TABLE schedules_v4;
DROP TABLE raw_records_v4;
DROP TABLE raw_payloads_v4;
DROP TABLE ingest_probes_v4;
DROP TABLE ingest_modules_v4;
DROP TABLE ingest_runs_v4;
DROP TABLE supervisor_state_v4;
DROP TABLE job_events_v4;
DROP TABLE audit_log_v4;
DROP TABLE jobs_v4;
DELETE FROM sqlite_sequence WHERE name GLOB '*_v4';
DROP TRIGGER v5_refused_raise;
DROP TABLE v5_refused;
-- 6. Indexes (as in V1..V4).
CREATE INDEX jobs_claim ON jobs (id, kind) WHERE state = 'created';
CREATE INDEX jobs_running_heartbeat ON jobs (heartbeat_at) WHERE state = 'running';
CREATE INDEX jobs_user ON jobs (user_id, id);
CREATE INDEX jobs_resumable ON jobs (id) WHERE state = 'paused' AND checkpoint IS NOT NULL;
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, id);
CREATE UNIQUE INDEX ingest_runs_one_active ON ingest_runs (lock_key) WHERE status = 'started';
CREATE INDEX ingest_runs_lease ON ingest_runs (lease_expires_at) WHERE status = 'started';
CREATE INDEX ingest_runs_started ON ingest_runs (started_at);
CREATE INDEX ingest_runs_status_started ON ingest_runs (status, started_at);
CREATE INDEX ingest_runs_scope_status ON ingest_runs (scope, status);
CREATE INDEX ingest_runs_pipeline ON ingest_runs (pipeline, scope, status, started_at);
CREATE INDEX ingest_runs_pipeline_started ON ingest_runs (pipeline, started_at);
CREATE INDEX ingest_runs_error_code ON ingest_runs (error_code, started_at) WHERE error_code IS NOT NULL;
CREATE INDEX ingest_probes_module ON ingest_probes (module, tested_at, id);
CREATE INDEX raw_records_run ON raw_records (run_id, id);
CREATE INDEX raw_records_sha256 ON raw_records (sha256);
CREATE INDEX schedules_due ON schedules (next_due_at) WHERE enabled = 1 AND next_due_at IS NOT NULL;
CREATE INDEX due_runs_claim ON due_runs (due_at) WHERE status = 'pending';
CREATE INDEX due_runs_claimed ON due_runs (claimed_at) WHERE status = 'claimed';
CREATE INDEX due_runs_missed ON due_runs (due_at) WHERE status IN ('skipped', 'failed');
CREATE INDEX due_runs_in_flight ON due_runs (due_at) WHERE status IN ('pending', 'claimed');

-- 7. Triggers. Messages are `CODE: table: rule` (stable; Error::from_sqlite parses them).
-- NEW.<id> is -1 in a BEFORE INSERT trigger when the id is left to AUTOINCREMENT; an
-- explicit id must lie above the table's high-water mark (never reused, never REPLACEd).

-- zones: filled by migrations only.
CREATE TRIGGER zones_immutable_insert BEFORE INSERT ON zones
BEGIN SELECT RAISE(ABORT, 'IMMUTABLE: zones: the zone list comes from the migrations'); END;
CREATE TRIGGER zones_immutable_update BEFORE UPDATE ON zones
BEGIN SELECT RAISE(ABORT, 'IMMUTABLE: zones: the zone list comes from the migrations'); END;
CREATE TRIGGER zones_immutable_delete BEFORE DELETE ON zones
BEGIN SELECT RAISE(ABORT, 'IMMUTABLE: zones: the zone list comes from the migrations'); END;
CREATE TRIGGER integrity_legacy_immutable_insert BEFORE INSERT ON integrity_legacy
BEGIN SELECT RAISE(ABORT, 'IMMUTABLE: integrity_legacy: written by migration V5 only'); END;
CREATE TRIGGER integrity_legacy_immutable_update BEFORE UPDATE ON integrity_legacy
BEGIN SELECT RAISE(ABORT, 'IMMUTABLE: integrity_legacy: written by migration V5 only'); END;
CREATE TRIGGER integrity_legacy_immutable_delete BEFORE DELETE ON integrity_legacy
BEGIN SELECT RAISE(ABORT, 'IMMUTABLE: integrity_legacy: written by migration V5 only'); END;

-- The migration history is written by refinery (insert) and never edited.
CREATE TRIGGER refinery_schema_history_no_update BEFORE UPDATE ON refinery_schema_history
BEGIN SELECT RAISE(ABORT, 'IMMUTABLE: refinery_schema_history: the migration history'); END;
CREATE TRIGGER refinery_schema_history_no_delete BEFORE DELETE ON refinery_schema_history
BEGIN SELECT RAISE(ABORT, 'IMMUTABLE: refinery_schema_history: the migration history'); END;

---------------------------------------------------------------------------------- jobs
CREATE TRIGGER jobs_insert_created
BEFORE INSERT ON jobs
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: jobs: an id is never reused (REPLACE or explicit id)')
     WHERE NEW.id <> -1 AND (NEW.id <= coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0)
                             OR EXISTS (SELECT 1 FROM jobs WHERE id = NEW.id));
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: a job starts created with attempt 0')
     WHERE NEW.state IS NOT 'created' OR NEW.attempt IS NOT 0 OR NEW.recovery_count IS NOT 0
        OR NEW.progress IS NOT 0 OR NEW.step IS NOT NULL OR NEW.checkpoint IS NOT NULL
        OR NEW.finished_at IS NOT NULL OR NEW.updated_at IS NOT NEW.created_at;
    SELECT RAISE(ABORT, 'MISSING_REFERENCE: jobs: parent_id names no job')
     WHERE NEW.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jobs WHERE id = NEW.parent_id);
    SELECT RAISE(ABORT, 'INVALID_SHAPE: jobs: tags are 1..64-byte strings')
     WHERE json_valid(NEW.tags) AND EXISTS (SELECT 1 FROM json_each(NEW.tags)
            WHERE type <> 'text' OR length(CAST(value AS BLOB)) NOT BETWEEN 1 AND 64
               OR instr(CAST(value AS BLOB), x'00') > 0);
    SELECT RAISE(ABORT, 'INVALID_SHAPE: jobs: input nested deeper than 100 levels')
     WHERE json_valid(NEW.input) AND EXISTS (SELECT 1 FROM json_tree(NEW.input)
            WHERE length(fullkey) - length(replace(replace(fullkey, '[', ''), '.', '')) > 100);
END;

-- A job's events already exist for a new id only if its id was reused: refuse.
CREATE TRIGGER jobs_insert_fresh_id
AFTER INSERT ON jobs
WHEN EXISTS (SELECT 1 FROM job_events WHERE job_id = NEW.id)
  OR EXISTS (SELECT 1 FROM jobs WHERE parent_id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: jobs: an id is never reused (rows still refer to it)');
END;

-- Every update: identity, the machine, fencing, and terminal rows frozen.
CREATE TRIGGER jobs_state_machine
BEFORE UPDATE ON jobs
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: jobs: id, owner, kind, tags, limits and created_at never change')
     WHERE NEW.id IS NOT OLD.id OR NEW.user_id IS NOT OLD.user_id OR NEW.kind IS NOT OLD.kind
        OR NEW.tags IS NOT OLD.tags OR NEW.created_at IS NOT OLD.created_at
        OR NEW.timeout_ms IS NOT OLD.timeout_ms OR NEW.max_retries IS NOT OLD.max_retries;
    SELECT RAISE(ABORT, 'IMMUTABLE: jobs: parent_id only clears when its parent is gone')
     WHERE NEW.parent_id IS NOT OLD.parent_id
       AND (NEW.parent_id IS NOT NULL OR EXISTS (SELECT 1 FROM jobs WHERE id = OLD.parent_id));
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: not a transition of the job machine')
     WHERE NEW.state IS NOT OLD.state
       AND (OLD.state, NEW.state) NOT IN (VALUES
            ('created', 'running'), ('created', 'cancelled'),
            ('running', 'paused'), ('running', 'completed'), ('running', 'failed'),
            ('running', 'cancelled'), ('running', 'created'),
            ('paused', 'running'), ('paused', 'created'), ('paused', 'cancelled'), ('paused', 'failed'),
            ('failed', 'created'), ('cancelled', 'created'));
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: completed is final')
     WHERE OLD.state = 'completed'
       AND (NEW.state IS NOT OLD.state OR NEW.input IS NOT OLD.input OR NEW.result IS NOT OLD.result
         OR NEW.error_code IS NOT OLD.error_code OR NEW.error_message IS NOT OLD.error_message
         OR NEW.progress IS NOT OLD.progress OR NEW.step IS NOT OLD.step
         OR NEW.checkpoint IS NOT OLD.checkpoint OR NEW.checkpoint_at IS NOT OLD.checkpoint_at
         OR NEW.attempt IS NOT OLD.attempt OR NEW.worker_id IS NOT OLD.worker_id
         OR NEW.recovery_count IS NOT OLD.recovery_count OR NEW.updated_at IS NOT OLD.updated_at
         OR NEW.started_at IS NOT OLD.started_at OR NEW.heartbeat_at IS NOT OLD.heartbeat_at
         OR NEW.finished_at IS NOT OLD.finished_at);
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: a job that is not running only has its recovery count reset')
     WHERE OLD.state IN ('created', 'paused', 'failed', 'cancelled') AND NEW.state IS OLD.state
       AND (NEW.input IS NOT OLD.input OR NEW.result IS NOT OLD.result
         OR NEW.error_code IS NOT OLD.error_code OR NEW.error_message IS NOT OLD.error_message
         OR NEW.progress IS NOT OLD.progress OR NEW.step IS NOT OLD.step
         OR NEW.checkpoint IS NOT OLD.checkpoint OR NEW.checkpoint_at IS NOT OLD.checkpoint_at
         OR NEW.attempt IS NOT OLD.attempt OR NEW.worker_id IS NOT OLD.worker_id
         OR (NEW.recovery_count IS NOT OLD.recovery_count AND NEW.recovery_count IS NOT 0)
         OR NEW.started_at IS NOT OLD.started_at OR NEW.heartbeat_at IS NOT OLD.heartbeat_at
         OR NEW.finished_at IS NOT OLD.finished_at);
    -- Invariant 6 (fencing): the attempt grows by exactly one exactly when the job is
    -- claimed (enters running), and a running job keeps its worker.
    SELECT RAISE(ABORT, 'STALE_ATTEMPT: jobs: attempt changes only by one on claim')
     WHERE (NEW.attempt IS NOT OLD.attempt
            OR (NEW.state = 'running' AND OLD.state IS NOT 'running')
            OR (NEW.state = 'running' AND OLD.state = 'running' AND NEW.worker_id IS NOT OLD.worker_id))
       AND NOT (NEW.state = 'running' AND OLD.state IN ('created', 'paused') AND NEW.attempt = OLD.attempt + 1);
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: recovery_count only grows on recovery, or resets')
     WHERE NEW.recovery_count IS NOT OLD.recovery_count AND NEW.recovery_count IS NOT 0
       AND NOT (NEW.recovery_count = OLD.recovery_count + 1 AND OLD.state = 'running');
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: started_at is set by the first claim only')
     WHERE NEW.started_at IS NOT OLD.started_at AND NEW.state IS NOT 'created'
       AND NOT (OLD.state = 'created' AND NEW.state = 'running');
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: a finished job keeps its finish time')
     WHERE OLD.finished_at IS NOT NULL AND NEW.finished_at IS NOT NULL AND NEW.finished_at IS NOT OLD.finished_at;
    SELECT RAISE(ABORT, 'INVALID_SHAPE: jobs: input nested deeper than 100 levels')
     WHERE NEW.input IS NOT OLD.input AND json_valid(NEW.input) AND EXISTS (SELECT 1 FROM json_tree(NEW.input)
            WHERE length(fullkey) - length(replace(replace(fullkey, '[', ''), '.', '')) > 100);
END;

-- Only terminal jobs may be deleted; their events and children's links go with them (what
-- the foreign keys do when they are on).
CREATE TRIGGER jobs_delete_terminal_only
BEFORE DELETE ON jobs
WHEN OLD.state NOT IN ('completed', 'failed', 'cancelled')
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: only terminal jobs may be deleted');
END;
CREATE TRIGGER jobs_delete_cascades
AFTER DELETE ON jobs
BEGIN
    DELETE FROM job_events WHERE job_id = OLD.id;
    UPDATE jobs SET parent_id = NULL WHERE parent_id = OLD.id;
END;

------------------------------------------------------------------------------ audit_log
CREATE TRIGGER audit_log_append_only
BEFORE INSERT ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: audit_log: an id is never reused (REPLACE or explicit id)')
     WHERE NEW.id <> -1 AND (NEW.id <= coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'), 0)
                             OR EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id));
    SELECT RAISE(ABORT, 'INTEGRITY: audit_log: a new row carries its chain hash')
     WHERE NEW.hash IS NULL;
END;
CREATE TRIGGER audit_log_no_update
BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: audit_log');
END;
CREATE TRIGGER audit_log_no_delete
BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: audit_log');
END;

----------------------------------------------------------------------------- job_events
-- Each event follows the job's last one, for a job that exists, at a cursor above every
-- cursor handed out (a UI resyncing by cursor never misses it), carrying its chain hash.
CREATE TRIGGER job_events_seq_follows
BEFORE INSERT ON job_events
BEGIN
    SELECT RAISE(ABORT, 'MISSING_REFERENCE: job_events: job_id names no job')
     WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = NEW.job_id);
    SELECT RAISE(ABORT, 'EVENT_SEQ: job_events: seq must follow the job''s last event')
     WHERE NEW.seq IS NOT coalesce((SELECT max(seq) FROM job_events WHERE job_id = NEW.job_id), 0) + 1;
    SELECT RAISE(ABORT, 'EVENT_CURSOR: job_events: a cursor only grows')
     WHERE NEW.cursor <> -1
       AND NEW.cursor <= max(coalesce((SELECT max(cursor) FROM job_events), 0),
                             coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'job_events'), 0));
    SELECT RAISE(ABORT, 'INTEGRITY: job_events: a new event carries its chain hash')
     WHERE NEW.hash IS NULL;
END;

-- Bounded backlog: keep the newest 200 events of each job.
CREATE TRIGGER job_events_prune
AFTER INSERT ON job_events
WHEN NEW.seq > 200
BEGIN
    DELETE FROM job_events WHERE job_id = NEW.job_id AND seq <= NEW.seq - 200;
END;

CREATE TRIGGER job_events_no_update
BEFORE UPDATE ON job_events
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: job_events');
END;

-- Only the pruning (events 200 behind the newest) and the removal of a deleted job's
-- events may delete.
CREATE TRIGGER job_events_no_delete
BEFORE DELETE ON job_events
WHEN OLD.seq > (SELECT max(seq) FROM job_events WHERE job_id = OLD.job_id) - 200
 AND EXISTS (SELECT 1 FROM jobs WHERE id = OLD.job_id)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: job_events');
END;

----------------------------------------------------------------------- supervisor_state
CREATE TRIGGER supervisor_state_insert_new
BEFORE INSERT ON supervisor_state
WHEN EXISTS (SELECT 1 FROM supervisor_state WHERE name = NEW.name)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: supervisor_state: a supervisor''s row is updated, never replaced');
END;
CREATE TRIGGER supervisor_state_counters_grow
BEFORE UPDATE ON supervisor_state
WHEN NEW.name IS NOT OLD.name OR NEW.ticks < OLD.ticks
  OR NEW.jobs_recovered < OLD.jobs_recovered OR NEW.jobs_failed < OLD.jobs_failed
  OR (OLD.last_tick_at IS NOT NULL AND NEW.last_tick_at IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: supervisor_state: the name is fixed and counters only grow');
END;

---------------------------------------------------------------------------- ingest_runs
-- Invariant 1: a run is born started (or, when it was turned away
-- or blocked before it could hold its lock, directly failed with meta_json.blockedStage).
CREATE TRIGGER ingest_runs_insert_started
BEFORE INSERT ON ingest_runs
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: ingest_runs: an id is never reused (REPLACE or explicit id)')
     WHERE NEW.id <> -1 AND (NEW.id <= coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'ingest_runs'), 0)
                             OR EXISTS (SELECT 1 FROM ingest_runs WHERE id = NEW.id));
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: ingest_runs: a run starts as started (or failed when blocked)')
     WHERE NOT (NEW.status = 'started'
                OR (NEW.status = 'failed' AND json_valid(NEW.meta_json)
                    AND json_type(NEW.meta_json, '$.blockedStage') IS 'text'));
    SELECT RAISE(ABORT, 'RUN_ALREADY_ACTIVE: ingest_runs: a started run holds this lock key')
     WHERE NEW.status = 'started'
       AND EXISTS (SELECT 1 FROM ingest_runs WHERE lock_key = NEW.lock_key AND status = 'started');
END;
CREATE TRIGGER ingest_runs_insert_fresh_id
AFTER INSERT ON ingest_runs
WHEN EXISTS (SELECT 1 FROM raw_records WHERE run_id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: ingest_runs: an id is never reused (raw records still refer to it)');
END;

-- Invariant 1: terminal runs never change (first, so it wins over the next trigger).
CREATE TRIGGER ingest_runs_terminal_is_final
BEFORE UPDATE ON ingest_runs
WHEN OLD.status <> 'started'
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: ingest_runs: terminal runs are immutable');
END;

-- Every update of a started run: the machine, identity, and an append-only timeline
-- (entries before the last are never touched; the last may only be closed in place).
CREATE TRIGGER ingest_runs_state_machine
BEFORE UPDATE ON ingest_runs
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: ingest_runs: not a transition of the run machine')
     WHERE NEW.status IS NOT OLD.status
       AND (OLD.status, NEW.status) NOT IN (VALUES ('started', 'success'), ('started', 'failed'));
    SELECT RAISE(ABORT, 'IMMUTABLE: ingest_runs: identity columns')
     WHERE NEW.id IS NOT OLD.id OR NEW.pipeline IS NOT OLD.pipeline OR NEW.scope IS NOT OLD.scope
        OR NEW.trigger IS NOT OLD.trigger OR NEW.lock_key IS NOT OLD.lock_key
        OR NEW.account_id IS NOT OLD.account_id OR NEW.started_at IS NOT OLD.started_at;
    SELECT RAISE(ABORT, 'IMMUTABLE: ingest_runs: timeline entries')
     WHERE NEW.timeline IS NOT OLD.timeline AND json_valid(NEW.timeline) AND json_valid(OLD.timeline)
       AND (json_array_length(NEW.timeline) < json_array_length(OLD.timeline)
            OR EXISTS (SELECT 1 FROM json_each(OLD.timeline) o
                        WHERE json_extract(NEW.timeline, '$[' || o.key || ']') IS NOT o.value
                          AND (o.key < json_array_length(OLD.timeline) - 1
                               OR json_extract(o.value, '$.status') IS NOT 'started'
                               OR json_extract(NEW.timeline, '$[' || o.key || '].stage') IS NOT json_extract(o.value, '$.stage')
                               OR json_extract(NEW.timeline, '$[' || o.key || '].attempt') IS NOT json_extract(o.value, '$.attempt')
                               OR json_extract(NEW.timeline, '$[' || o.key || '].started_at') IS NOT json_extract(o.value, '$.started_at'))));
END;

-- Every timeline entry has the one shape src/run/timeline.rs reads (version 1, every key).
CREATE TRIGGER ingest_runs_timeline_shape_insert
BEFORE INSERT ON ingest_runs
WHEN json_valid(NEW.timeline) AND EXISTS (SELECT 1 FROM json_each(NEW.timeline) e WHERE NOT (
        e.type = 'object'
        AND (SELECT count(*) FROM json_each(e.value)) = 11
        AND json_type(e.value, '$.v') = 'integer' AND json_extract(e.value, '$.v') = 1
        AND json_type(e.value, '$.stage') = 'text'
        AND json_extract(e.value, '$.kind') IN ('lock', 'gate', 'runner')
        AND json_type(e.value, '$.attempt') = 'integer' AND json_extract(e.value, '$.attempt') BETWEEN 0 AND 4294967295
        AND json_extract(e.value, '$.status') IN ('started', 'success', 'failed', 'skipped')
        AND json_type(e.value, '$.started_at') = 'text'
        AND strftime('%Y-%m-%dT%H:%M:%fZ', json_extract(e.value, '$.started_at'), '+0 seconds') IS json_extract(e.value, '$.started_at')
        AND json_type(e.value, '$.finished_at') IN ('null', 'text')
        AND (json_type(e.value, '$.finished_at') = 'null'
             OR strftime('%Y-%m-%dT%H:%M:%fZ', json_extract(e.value, '$.finished_at'), '+0 seconds') IS json_extract(e.value, '$.finished_at'))
        AND json_type(e.value, '$.duration_ms') IN ('null', 'integer')
        AND json_type(e.value, '$.error_code') IN ('null', 'text')
        AND json_type(e.value, '$.message') IN ('null', 'text')
        AND json_type(e.value, '$.detail') IS NOT NULL))
BEGIN
    SELECT RAISE(ABORT, 'INVALID_SHAPE: ingest_runs: a timeline entry of a shape no reader knows');
END;
CREATE TRIGGER ingest_runs_timeline_shape_update
BEFORE UPDATE ON ingest_runs
WHEN NEW.timeline IS NOT OLD.timeline AND json_valid(NEW.timeline)
 AND EXISTS (SELECT 1 FROM json_each(NEW.timeline) e WHERE NOT (
        e.type = 'object'
        AND (SELECT count(*) FROM json_each(e.value)) = 11
        AND json_type(e.value, '$.v') = 'integer' AND json_extract(e.value, '$.v') = 1
        AND json_type(e.value, '$.stage') = 'text'
        AND json_extract(e.value, '$.kind') IN ('lock', 'gate', 'runner')
        AND json_type(e.value, '$.attempt') = 'integer' AND json_extract(e.value, '$.attempt') BETWEEN 0 AND 4294967295
        AND json_extract(e.value, '$.status') IN ('started', 'success', 'failed', 'skipped')
        AND json_type(e.value, '$.started_at') = 'text'
        AND strftime('%Y-%m-%dT%H:%M:%fZ', json_extract(e.value, '$.started_at'), '+0 seconds') IS json_extract(e.value, '$.started_at')
        AND json_type(e.value, '$.finished_at') IN ('null', 'text')
        AND (json_type(e.value, '$.finished_at') = 'null'
             OR strftime('%Y-%m-%dT%H:%M:%fZ', json_extract(e.value, '$.finished_at'), '+0 seconds') IS json_extract(e.value, '$.finished_at'))
        AND json_type(e.value, '$.duration_ms') IN ('null', 'integer')
        AND json_type(e.value, '$.error_code') IN ('null', 'text')
        AND json_type(e.value, '$.message') IN ('null', 'text')
        AND json_type(e.value, '$.detail') IS NOT NULL))
BEGIN
    SELECT RAISE(ABORT, 'INVALID_SHAPE: ingest_runs: a timeline entry of a shape no reader knows');
END;

-- A started run holds its lock and may not vanish; retention deletes terminal runs only.
CREATE TRIGGER ingest_runs_delete_terminal_only
BEFORE DELETE ON ingest_runs
WHEN OLD.status = 'started'
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: ingest_runs: a started run cannot be deleted');
END;

-------------------------------------------------------------- ingest_modules, ingest_probes
CREATE TRIGGER ingest_modules_scopes_insert
BEFORE INSERT ON ingest_modules
WHEN json_valid(NEW.scopes) AND EXISTS (SELECT 1 FROM json_each(NEW.scopes)
        WHERE type <> 'text' OR value NOT IN ('targets', 'universe'))
BEGIN
    SELECT RAISE(ABORT, 'INVALID_SHAPE: ingest_modules: scopes are among targets, universe');
END;
CREATE TRIGGER ingest_modules_scopes_update
BEFORE UPDATE ON ingest_modules
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: ingest_modules: a module is never renamed')
     WHERE NEW.module IS NOT OLD.module;
    SELECT RAISE(ABORT, 'INVALID_SHAPE: ingest_modules: scopes are among targets, universe')
     WHERE json_valid(NEW.scopes) AND EXISTS (SELECT 1 FROM json_each(NEW.scopes)
            WHERE type <> 'text' OR value NOT IN ('targets', 'universe'));
END;
CREATE TRIGGER ingest_modules_delete_cascades
AFTER DELETE ON ingest_modules
BEGIN
    DELETE FROM ingest_probes WHERE module = OLD.module;
END;

CREATE TRIGGER ingest_probes_insert_checked
BEFORE INSERT ON ingest_probes
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: ingest_probes: an id is never reused (REPLACE or explicit id)')
     WHERE NEW.id <> -1 AND (NEW.id <= coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'ingest_probes'), 0)
                             OR EXISTS (SELECT 1 FROM ingest_probes WHERE id = NEW.id));
    SELECT RAISE(ABORT, 'MISSING_REFERENCE: ingest_probes: module names no module')
     WHERE NOT EXISTS (SELECT 1 FROM ingest_modules WHERE module = NEW.module);
END;
CREATE TRIGGER ingest_probes_no_update
BEFORE UPDATE ON ingest_probes
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: ingest_probes');
END;
CREATE TRIGGER ingest_probes_delete_with_module_only
BEFORE DELETE ON ingest_probes
WHEN EXISTS (SELECT 1 FROM ingest_modules WHERE module = OLD.module)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: ingest_probes');
END;

---------------------------------------------------------------- raw_payloads, raw_records
-- Invariant 5: raw payloads, stored once per SHA-256, immutable. Inserting a stored key
-- again is a no-op only with the very same bytes (so `ON CONFLICT DO NOTHING` works and
-- REPLACE cannot swap the payload).
CREATE TRIGGER raw_payloads_insert_same_bytes
BEFORE INSERT ON raw_payloads
WHEN EXISTS (SELECT 1 FROM raw_payloads WHERE sha256 = NEW.sha256
              AND (size IS NOT NEW.size OR payload IS NOT NEW.payload))
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: raw_payloads');
END;
CREATE TRIGGER raw_payloads_no_update
BEFORE UPDATE ON raw_payloads
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: raw_payloads');
END;
CREATE TRIGGER raw_payloads_delete_unreferenced_only
BEFORE DELETE ON raw_payloads
WHEN EXISTS (SELECT 1 FROM raw_records WHERE sha256 = OLD.sha256)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: raw_payloads');
END;

-- A record's size is its payload's size, and only a started run adds records.
CREATE TRIGGER raw_records_insert_checked
BEFORE INSERT ON raw_records
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: raw_records: an id is never reused (REPLACE or explicit id)')
     WHERE NEW.id <> -1 AND (NEW.id <= coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'raw_records'), 0)
                             OR EXISTS (SELECT 1 FROM raw_records WHERE id = NEW.id));
    SELECT RAISE(ABORT, 'IMMUTABLE: raw_records: records are added by a started run for a stored payload')
     WHERE NEW.size IS NOT (SELECT size FROM raw_payloads WHERE sha256 = NEW.sha256)
        OR NOT EXISTS (SELECT 1 FROM ingest_runs WHERE id = NEW.run_id AND status = 'started');
END;
CREATE TRIGGER raw_records_no_update
BEFORE UPDATE ON raw_records
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: raw_records');
END;
-- Retention exception: a record may be deleted only once its run is gone.
CREATE TRIGGER raw_records_delete_orphans_only
BEFORE DELETE ON raw_records
WHEN EXISTS (SELECT 1 FROM ingest_runs WHERE id = OLD.run_id)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: raw_records');
END;

------------------------------------------------------------------------------ schedules
CREATE TRIGGER schedules_insert_checked
BEFORE INSERT ON schedules
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: schedules: an id is never reused (REPLACE or explicit id)')
     WHERE NEW.id <> -1 AND (NEW.id <= coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'schedules'), 0)
                             OR EXISTS (SELECT 1 FROM schedules WHERE id = NEW.id));
    SELECT RAISE(ABORT, 'DUPLICATE: schedules: a schedule of this name exists')
     WHERE EXISTS (SELECT 1 FROM schedules WHERE name = NEW.name);
    SELECT RAISE(ABORT, 'MISSING_REFERENCE: schedules: zone is not an IANA zone of the tz database')
     WHERE NOT EXISTS (SELECT 1 FROM zones WHERE name = NEW.zone);
END;
CREATE TRIGGER schedules_insert_fresh_id
AFTER INSERT ON schedules
WHEN EXISTS (SELECT 1 FROM due_runs WHERE schedule_id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: schedules: an id is never reused (slots still refer to it)');
END;

-- The high-water mark only moves forward, so a clock that jumps backwards never
-- materializes (and so never fires) a slot twice. Fires on every update.
CREATE TRIGGER schedules_high_water_mark
BEFORE UPDATE ON schedules
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: schedules: id and created_at never change')
     WHERE NEW.id IS NOT OLD.id OR NEW.created_at IS NOT OLD.created_at;
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: schedules: last_due_at only moves forward')
     WHERE OLD.last_due_at IS NOT NULL AND (NEW.last_due_at IS NULL OR NEW.last_due_at < OLD.last_due_at);
    SELECT RAISE(ABORT, 'MISSING_REFERENCE: schedules: zone is not an IANA zone of the tz database')
     WHERE NEW.zone IS NOT OLD.zone AND NOT EXISTS (SELECT 1 FROM zones WHERE name = NEW.zone);
END;

-- A schedule with a slot in flight cannot be deleted (its ticker will record the outcome);
-- its finished slots go with it (what the foreign key does when it is on).
CREATE TRIGGER schedules_delete_idle_only
BEFORE DELETE ON schedules
WHEN EXISTS (SELECT 1 FROM due_runs WHERE schedule_id = OLD.id AND status = 'claimed')
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: schedules: a slot of this schedule is being fired');
END;
CREATE TRIGGER schedules_delete_cascades
AFTER DELETE ON schedules
BEGIN
    DELETE FROM due_runs WHERE schedule_id = OLD.id;
END;

------------------------------------------------------------------------------- due_runs
-- A slot is born pending, for a schedule that exists, after its high-water mark, at an
-- instant it does not already have.
CREATE TRIGGER due_runs_insert_pending_after_high_water_mark
BEFORE INSERT ON due_runs
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: due_runs: an id is never reused (REPLACE or explicit id)')
     WHERE NEW.id <> -1 AND (NEW.id <= coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'due_runs'), 0)
                             OR EXISTS (SELECT 1 FROM due_runs WHERE id = NEW.id));
    SELECT RAISE(ABORT, 'MISSING_REFERENCE: due_runs: schedule_id names no schedule')
     WHERE NOT EXISTS (SELECT 1 FROM schedules WHERE id = NEW.schedule_id);
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: due_runs: a slot is born pending, after the last materialized slot')
     WHERE NEW.status IS NOT 'pending'
        OR NEW.due_at <= (SELECT last_due_at FROM schedules WHERE id = NEW.schedule_id)
        OR EXISTS (SELECT 1 FROM due_runs WHERE schedule_id = NEW.schedule_id AND due_at = NEW.due_at);
END;

-- Terminal slots are final: nothing of a fired, skipped or failed slot changes again.
CREATE TRIGGER due_runs_terminal_is_final
BEFORE UPDATE ON due_runs
WHEN OLD.status IN ('fired', 'skipped', 'failed')
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: due_runs: terminal slots are final');
END;

-- Every update: the machine, identity, the claim's fence, and runs that exist.
CREATE TRIGGER due_runs_state_machine
BEFORE UPDATE ON due_runs
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: due_runs: not a transition of the slot machine')
     WHERE NEW.status IS NOT OLD.status
       AND (OLD.status, NEW.status) NOT IN (VALUES
            ('pending', 'claimed'), ('pending', 'skipped'),
            ('claimed', 'fired'), ('claimed', 'skipped'), ('claimed', 'failed'));
    SELECT RAISE(ABORT, 'IMMUTABLE: due_runs: a slot''s id, schedule and instant never change')
     WHERE NEW.id IS NOT OLD.id OR NEW.schedule_id IS NOT OLD.schedule_id
        OR NEW.due_at IS NOT OLD.due_at OR NEW.created_at IS NOT OLD.created_at;
    SELECT RAISE(ABORT, 'CLAIM_FENCE: due_runs: a claim is never handed to another ticker')
     WHERE OLD.claimed_by IS NOT NULL
       AND (NEW.claimed_by IS NOT OLD.claimed_by OR NEW.claimed_at IS NOT OLD.claimed_at);
    SELECT RAISE(ABORT, 'MISSING_REFERENCE: due_runs: run_ids name runs that do not exist')
     WHERE NEW.run_ids IS NOT OLD.run_ids AND json_valid(NEW.run_ids)
       AND EXISTS (SELECT 1 FROM json_each(NEW.run_ids) r
                    WHERE r.type <> 'integer' OR NOT EXISTS (SELECT 1 FROM ingest_runs WHERE id = r.value));
END;

-- A slot being fired cannot be deleted (finished history may be pruned).
CREATE TRIGGER due_runs_delete_not_claimed
BEFORE DELETE ON due_runs
WHEN OLD.status = 'claimed'
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: due_runs: a claimed slot cannot be deleted');
END;
