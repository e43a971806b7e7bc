"""The hub's database tables as SQLAlchemy Core metadata.

Ingest (events, dead letters, kiosks), accounts and the audit log, declarations, passes and their keys.
Every change here comes with an Alembic revision in ``migrations/versions``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

#: Constraint names are fixed so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Largest dead-letter payload kept; the full size is recorded next to it.
DEAD_LETTER_PAYLOAD_MAX = 64 * 1024

#: 64-bit ids on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-incrementing rowid.
BigId = BigInteger().with_variant(Integer, "sqlite")

metadata = MetaData(naming_convention=NAMING_CONVENTION)

events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kiosk_id", String(64), nullable=False),
    Column("epoch", String(32), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("uuid", String(36), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("device_time", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("body", JSON, nullable=False),
    UniqueConstraint("kiosk_id", "epoch", "seq", name="uq_events_kiosk_epoch_seq"),
    Index("ix_events_kind_device_time", "kind", "device_time"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("topic", String(512), nullable=False),
    Column("kiosk_id", String(64), nullable=True),
    Column("reason", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("payload_size", Integer, nullable=False),
)

kiosks = Table(
    "kiosks",
    metadata,
    Column("kiosk_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("version", String(64), nullable=False),
    Column("outbox_depth", Integer, nullable=True),
    Column("oldest_unacked_age_s", Float, nullable=True),
    Column("list_ages", JSON, nullable=False),
    Column("state_sent_at", DateTime(timezone=True), nullable=True),
    Column("last_seen", DateTime(timezone=True), nullable=False),
)

# --------------------------------------------------------------------- accounts, audit (revision 0002)

users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("role", String(32), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_login_at", DateTime(timezone=True), nullable=True),
    # Bumped on password change or deactivation: sessions carrying an older value are logged out.
    Column("session_version", Integer, nullable=False, default=1),
)

#: Machine credentials for the JSON API: only a SHA-256 of the token is stored.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("role", String(32), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_by", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("role", String(32), nullable=True),
    Column("action", String(64), nullable=False),
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(200), nullable=True),
    Column("detail", JSON, nullable=False),
    Column("remote_addr", String(64), nullable=True),
    Index("ix_audit_log_at", "at"),
)

# ------------------------------------------------------------ declarations and passes (revision 0002)

#: One declaration per person: a family submission ("khai hộ") makes one row per member with the same
#: ``submission_id``. A newer declaration for the same person supersedes the older (history is kept).
declarations = Table(
    "declarations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),  # ncovi | vhd
    Column("submission_id", String(36), nullable=False),
    Column("declared_by", BigInteger, nullable=True),  # the declarant's own declaration id ("khai hộ")
    Column("relationship", String(32), nullable=True),
    # Who the person is: CCCD/CMND or passport number, upper-cased; links a person's declarations.
    Column("id_number", String(32), nullable=False),
    Column("full_name", String(200), nullable=False),
    Column("birth_date", Date, nullable=True),
    Column("birth_year", Integer, nullable=False),
    Column("gender", String(8), nullable=False),
    Column("phone", String(20), nullable=True),
    Column("nationality", String(2), nullable=False),  # ISO 3166-1 alpha-2
    Column("province", String(100), nullable=True),
    Column("district", String(100), nullable=True),
    Column("commune", String(100), nullable=True),
    Column("address", String(300), nullable=True),
    # Symptoms, exposure, vaccination, and for VHD the journey: see hub/declarations.py.
    Column("answers", JSON, nullable=False),
    Column("colour", String(8), nullable=False),
    Column("colour_reasons", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("superseded_at", DateTime(timezone=True), nullable=True),
    Column("superseded_by", BigInteger, nullable=True),
    Index("ix_declarations_id_number", "id_number"),
    Index("ix_declarations_created_at", "created_at"),
    Index("ix_declarations_submission_id", "submission_id"),
)

#: Health-pass signing keys. The private key is PEM, encrypted with the hub's key passphrase when one
#: is configured. A retired key signs nothing more but stays in the trust list until ``trusted_until``.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(16), primary_key=True),  # hex of protocol.healthpass.kid_for
    Column("alg", String(8), nullable=False),
    Column("private_pem", LargeBinary, nullable=False),
    Column("public_pem", LargeBinary, nullable=False),
    Column("encrypted", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True), nullable=True),
    Column("trusted_until", DateTime(timezone=True), nullable=False),
)

passes = Table(
    "passes",
    metadata,
    Column("pass_id", String(32), primary_key=True),
    Column("declaration_id", BigInteger, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("colour", String(8), nullable=False),  # the colour signed into the pass
    Column("kid", String(16), nullable=False),
    Column("qr_text", Text, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_passes_declaration_id", "declaration_id"),
    Index("ix_passes_expires_at", "expires_at"),
)

#: Passes whose colour changed after issue; the status list published to kiosks is built from it.
pass_status = Table(
    "pass_status",
    metadata,
    Column("pass_id", String(32), primary_key=True),
    Column("colour", String(8), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

#: Versions of what the hub publishes (trust list, status list): bumped in the transaction that changes it.
list_versions = Table(
    "list_versions",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
)

#: Secrets the hub makes for itself on first run (e.g. the session signing key when none is configured),
#: so every web worker process and every restart uses the same one.
hub_secrets = Table(
    "hub_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# ------------------------------------------------------------------ venues and devices (revision 0003)

venues = Table(
    "venues",
    metadata,
    Column("venue_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("venue_type", String(32), nullable=False),
    Column("province", String(100), nullable=True),
    Column("district", String(100), nullable=True),
    Column("address", String(300), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

#: Enrolled kiosks: who they are (certificate), where they stand, whether they are cut off.
devices = Table(
    "devices",
    metadata,
    Column("kiosk_id", String(64), primary_key=True),
    Column("venue_id", String(64), nullable=False),
    Column("cert_serial", String(64), nullable=True),
    Column("cert_not_after", DateTime(timezone=True), nullable=True),
    Column("enrolled_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_reason", String(200), nullable=True),
    Index("ix_devices_venue_id", "venue_id"),
)

#: Single-use, expiring enrolment tokens; only a SHA-256 of the token is stored.
enrolment_tokens = Table(
    "enrolment_tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("kiosk_id", String(64), nullable=False),
    Column("venue_id", String(64), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("approved_at", DateTime(timezone=True), nullable=True),
    Column("approved_by", String(200), nullable=True),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Column("used_cert_serial", String(64), nullable=True),
)

# ------------------------------------------------------------------------------ tracing (revision 0004)

#: One row per person the hub has seen, keyed by an HMAC of their ID number (or ``pass:<id>`` for a pass
#: the hub cannot link to a declaration); tracing works on the integer ``id``.
persons = Table(
    "persons",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("person_key", String(80), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

#: Which person each declaration belongs to (filled as declarations are linked, see hub/identity.py).
declaration_persons = Table(
    "declaration_persons",
    metadata,
    Column("declaration_id", BigInteger, primary_key=True, autoincrement=False),
    Column("person_id", BigInteger, nullable=False),
    Index("ix_declaration_persons_person_id", "person_id"),
)

#: Presence intervals derived from check-in/check-out events on ingest. Times are epoch seconds (UTC)
#: so range scans compare integers on both backends. A stay is never longer than 12 h (the check), and
#: each venue's longest stay is kept in ``venue_stays`` so scans can start at ``arrive - max_stay``.
visits = Table(
    "visits",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("venue_id", String(64), nullable=False),
    Column("person_id", BigInteger, nullable=False),
    Column("arrive_s", BigInteger, nullable=False),
    Column("depart_s", BigInteger, nullable=False),
    Column("arrive_scanned", Boolean, nullable=False),
    Column("depart_scanned", Boolean, nullable=False),
    # Bumped on insert and on every change, from one counter held until commit: readers that keep an
    # in-memory copy fetch ``rev > last`` and see changes in commit order.
    Column("rev", BigInteger, nullable=False),
    # The event that created the row: a resent event finds it and changes nothing.
    Column("kiosk_id", String(64), nullable=False),
    Column("epoch", String(32), nullable=False),
    Column("seq", BigInteger, nullable=False),
    UniqueConstraint("kiosk_id", "epoch", "seq", name="uq_visits_kiosk_epoch_seq"),
    CheckConstraint("depart_s >= arrive_s AND depart_s - arrive_s <= 43200", name="stay_bounded"),
    Index("ix_visits_venue_span", "venue_id", "arrive_s", "depart_s", "person_id"),
    Index("ix_visits_person_arrive", "person_id", "arrive_s"),
    Index("ix_visits_rev", "rev"),
)

venue_stays = Table(
    "venue_stays",
    metadata,
    Column("venue_id", String(64), primary_key=True),
    Column("max_stay_s", Integer, nullable=False),
)

#: A confirmed case (F0) opened by a health official, with its look-back window.
cases = Table(
    "cases",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("person_id", BigInteger, nullable=False),
    Column("opened_from", String(16), nullable=False),  # declaration | pass | cccd | phone
    Column("declaration_id", BigInteger, nullable=True),
    Column("label", String(200), nullable=False),
    Column("onset_date", Date, nullable=True),
    Column("test_date", Date, nullable=True),
    Column("window_start_s", BigInteger, nullable=False),
    Column("window_end_s", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # open | closed
    Column("note", Text, nullable=True),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("f1_count", Integer, nullable=False),
    Column("f2_state", String(16), nullable=False),  # pending | running | done | failed
    Column("f2_progress", Float, nullable=False),
    Column("f2_count", Integer, nullable=False),
    Column("f2_started_at", DateTime(timezone=True), nullable=True),
    Column("f2_finished_at", DateTime(timezone=True), nullable=True),
    Column("f2_error", Text, nullable=True),
    Index("ix_cases_person_id", "person_id"),
)

#: F1 and F2 of a case, one row per person, with the encounters that made them a contact.
case_contacts = Table(
    "case_contacts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("case_id", BigInteger, nullable=False),
    Column("person_id", BigInteger, nullable=False),
    Column("degree", Integer, nullable=False),  # 1 = F1, 2 = F2
    Column("via_person_id", BigInteger, nullable=False),
    Column("first_contact_s", BigInteger, nullable=False),
    Column("last_contact_s", BigInteger, nullable=False),
    Column("overlap_s", Integer, nullable=False),  # the longest single encounter
    Column("encounters", Integer, nullable=False),
    Column("reasons", JSON, nullable=False),  # the first encounters: venue, times, overlap, source
    Column("status", String(16), nullable=False),  # suggested | confirmed | dismissed
    Column("decided_by", String(200), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("case_id", "person_id", name="uq_case_contacts_case_person"),
    Index("ix_case_contacts_case_degree_status", "case_id", "degree", "status"),
    Index("ix_case_contacts_person_id", "person_id"),
)

#: Notices to people linked to a case; unique per person and case, so nobody is told twice.
notifications = Table(
    "notifications",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("case_id", BigInteger, nullable=False),
    Column("person_id", BigInteger, nullable=False),
    Column("degree", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # held|pending|sending|sent|failed|no_contact|cancelled
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("case_id", "person_id", name="uq_notifications_case_person"),
    Index("ix_notifications_status_next", "status", "next_attempt_at"),
)
