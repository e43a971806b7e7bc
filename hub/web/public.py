"""Pages for citizens: start page, NCOVI and VHD declaration forms, health pass pages, finding a pass,
and the exposure status page.

The forms are plain HTML posted back to the same URL; their field names are the paths of
:mod:`hub.declarations`' models (``declarant.address.province``, ``members.1.birth_date``), so the
domain's field-level problems land next to their fields. Family members are added and removed with
submit buttons that re-render the form (no JavaScript needed). CSRF: every form carries
``csrf_token()``, which the app-wide ``CSRFProtect`` checks on every POST.

Who may see a pass: the pass page (``/the/<pass id>``), its print page and QR downloads are open to
whoever has the pass id. That is acceptable because the id is 50 random bits (guessing one is hopeless
even without a rate limit) and because these pages show nothing more than the QR itself holds:
initials, birth year, colour, validity, never the full name or an ID number. They are not open
forever: once the pass expires, or its declaration is purged, the pages stop showing the QR. Pages and
images are sent ``no-store`` and ``noindex``, and the ``no-referrer`` policy keeps the id out of other
sites' logs. The reasons for a colour (symptoms, exposure) are shown only on the result page, to the
browser session that made the declaration.

The exposure status page (``/tinh-trang``) asks for the pass id and the birth date, like "find my pass",
and answers "not found" the same way for both. It shows the holder where and when their visits met a
confirmed case (or a contact of one), their degree and what to do: never the case, nor whom they met.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from babel import Locale
from flask import Blueprint, abort, make_response, redirect, render_template, request, session, url_for
from flask_babel import format_datetime, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, select
from werkzeug.datastructures import MultiDict

from hub import declarations as decl
from hub import pass_rules
from hub.db.schema import case_contacts, cases, declaration_persons, declarations, persons
from hub.notify import Exposure, exposures
from hub.passes import display_pass_id, normalise_pass_id, qr_png, qr_svg
from hub.web.auth import public_view
from hub.web.extensions import hub_web, limiter, public_form_rate

bp = Blueprint("public", __name__)

#: Session key of the passes issued by this browser's last declaration (shown on the result page).
RESULT_KEY = "issued_passes"
#: Pixels per QR module: a pass QR (about 60 modules with its quiet zone) is about 600 pixels wide.
QR_SCALE = 10
#: Form fields that are not answers.
CONTROL_FIELDS = frozenset({"csrf_token", "action", "member_count"})
#: Field names look like ``members.3.vaccination.last_dose_date``: never deeper, never longer.
MAX_FIELD_DEPTH = 5
MAX_FIELD_NAME = 80
MAX_FIELDS = 600
MAX_LIST_INDEX = 30
LIST_FIELDS = frozenset({"symptoms", "exposures", "countries_visited"})


def _clock() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------- form spec


@dataclass(frozen=True)
class FormField:
    """One input of a form; ``name`` is relative to its person (``address.province``)."""

    name: str
    label: Any
    kind: str = "text"  # text | date | tel | number | select | radio | checkboxes | multiselect
    required: bool = True
    options: Callable[[], list[tuple[str, str]]] | None = None
    hint: Any = None
    maxlength: int | None = None
    autocomplete: str | None = None
    inputmode: str | None = None
    wide: bool = False
    blank: bool = True  # a select starts with an empty "choose" option


@dataclass(frozen=True)
class Section:
    """A fieldset of a form."""

    title: Any
    fields: tuple[FormField, ...]
    hint: Any = None
    css: str = ""


def _enum_options(enum: type) -> Callable[[], list[tuple[str, str]]]:
    labels = decl.CHOICE_LABELS[enum]

    def options() -> list[tuple[str, str]]:
        return [(member.value, _(labels[member.value])) for member in enum]

    return options


def _symptom_options() -> list[tuple[str, str]]:
    locale = get_locale()
    return [(s.value, pass_rules.symptom_label(s, locale)) for s in pass_rules.Symptom]


def _exposure_options() -> list[tuple[str, str]]:
    locale = get_locale()
    return [(e.value, pass_rules.exposure_label(e, locale)) for e in pass_rules.Exposure]


def _province_options() -> list[tuple[str, str]]:
    return [(name, name) for name in _sorted_provinces()]


@functools.cache
def _sorted_provinces() -> tuple[str, ...]:
    return tuple(sorted(decl.PROVINCES, key=_collation_key))


def _doses_options() -> list[tuple[str, str]]:
    return [(str(n), str(n)) for n in range(decl.MAX_DOSES + 1)]


def _gate_options() -> list[tuple[str, str]]:
    return [(code, _(label)) for code, label in decl.BORDER_GATES.items()]


def _collation_key(text: str) -> str:
    """Sort key ignoring diacritics (so Đà Nẵng sorts with D, Ấn Độ with A)."""
    plain = unicodedata.normalize("NFKD", text.replace("Đ", "D").replace("đ", "d"))
    return "".join(c for c in plain if not unicodedata.combining(c)).casefold()


def country_options() -> list[tuple[str, str]]:
    """Every ISO country as (code, name in the current language), Viet Nam first, the rest by name."""
    return list(_country_options(str(get_locale() or "vi")))


@functools.lru_cache(maxsize=8)
def _country_options(locale: str) -> tuple[tuple[str, str], ...]:
    # Built once per language: a family's form lists every country once per person.
    names = Locale.parse(locale).territories
    rest = sorted(
        ((code, names.get(code, code)) for code in decl.COUNTRY_CODES if code != "VN"),
        key=lambda item: _collation_key(item[1]),
    )
    return (("VN", names.get("VN", "Việt Nam")), *rest)


def _address_fields(prefix: str) -> tuple[FormField, ...]:
    return (
        FormField(f"{prefix}province", _l("Province or city"), "select", options=_province_options),
        FormField(f"{prefix}district", _l("District, town or city"), maxlength=decl.PLACE_MAX),
        FormField(f"{prefix}commune", _l("Commune, ward or township"), maxlength=decl.PLACE_MAX),
        FormField(
            f"{prefix}street",
            _l("House number, street, hamlet"),
            maxlength=decl.STREET_MAX,
            autocomplete="street-address",
            wide=True,
        ),
    )


def _health_sections(test_rows: int) -> list[Section]:
    tests = tuple(
        field
        for row in range(test_rows)
        for field in (
            FormField(f"tests.{row}.type", _l("Test"), "select", False, _enum_options(decl.TestType)),
            FormField(f"tests.{row}.date", _l("Test date"), "date", False),
            FormField(f"tests.{row}.result", _l("Result"), "select", False, _enum_options(decl.TestOutcome)),
        )
    )
    return [
        Section(
            _l("Symptoms in the last 14 days"),
            (FormField("symptoms", _l("Tick every symptom you had"), "checkboxes", False, _symptom_options),),
            css="checks",
        ),
        Section(
            _l("Exposure in the last 14 days"),
            (
                FormField(
                    "exposures", _l("Tick everything that applies"), "checkboxes", False, _exposure_options
                ),
            ),
            css="checks",
        ),
        Section(
            _l("COVID-19 tests in the last 14 days"),
            tests,
            hint=_l("Leave empty if you had no test."),
        ),
    ]


def _vaccination_section() -> Section:
    return Section(
        _l("COVID-19 vaccination"),
        (
            FormField(
                "vaccination.doses", _l("Doses received"), "select", False, _doses_options, blank=False
            ),
            FormField("vaccination.last_dose_date", _l("Date of the last dose"), "date", False),
            FormField(
                "vaccination.vaccine",
                _l("Vaccine of the last dose"),
                "select",
                False,
                _enum_options(decl.Vaccine),
            ),
        ),
    )


def _ncovi_person_sections(*, member: bool) -> list[Section]:
    identity = [
        FormField(
            "full_name", _l("Full name"), maxlength=decl.NAME_MAX, autocomplete="off" if member else "name"
        ),
    ]
    if member:
        identity += [
            FormField(
                "relationship", _l("Relationship to you"), "select", options=_enum_options(decl.Relationship)
            ),
            FormField(
                "birth_date",
                _l("Birth date"),
                "date",
                False,
                hint=_l("If you do not know it, give the year."),
            ),
            FormField(
                "birth_year",
                _l("Birth year (when the date is unknown)"),
                "number",
                False,
                inputmode="numeric",
            ),
        ]
    else:
        identity.append(FormField("birth_date", _l("Birth date"), "date", autocomplete="bday"))
    identity += [
        FormField("gender", _l("Gender"), "radio", options=_enum_options(decl.Gender)),
        FormField("id_type", _l("Identity document"), "select", options=_enum_options(decl.IdType)),
        FormField(
            "id_number",
            _l("Document number"),
            maxlength=32,
            hint=_l("Children: their 12-digit personal identification number."),
            autocomplete="off",
        ),
        FormField("nationality", _l("Nationality"), "select", options=country_options),
        FormField(
            "phone",
            _l("Mobile phone"),
            "tel",
            required=not member,
            maxlength=20,
            autocomplete="off" if member else "tel",
            inputmode="tel",
        ),
    ]
    sections = [Section(_l("Personal details"), tuple(identity))]
    if not member:
        sections.append(Section(_l("Where you live"), _address_fields("address.")))
    sections += _health_sections(test_rows=1)
    sections.append(_vaccination_section())
    return sections


def _vhd_sections() -> list[Section]:
    return [
        Section(
            _l("Personal details"),
            (
                FormField(
                    "full_name",
                    _l("Full name (as in the passport)"),
                    maxlength=decl.NAME_MAX,
                    autocomplete="name",
                ),
                FormField("birth_date", _l("Birth date"), "date", autocomplete="bday"),
                FormField("gender", _l("Gender"), "radio", options=_enum_options(decl.Gender)),
                FormField("nationality", _l("Nationality"), "select", options=country_options),
                FormField("passport_number", _l("Passport number"), maxlength=32, autocomplete="off"),
                FormField(
                    "phone",
                    _l("Mobile phone in Viet Nam or abroad"),
                    "tel",
                    False,
                    maxlength=20,
                    autocomplete="tel",
                    inputmode="tel",
                ),
            ),
        ),
        Section(
            _l("Journey"),
            (
                FormField(
                    "transport.mode", _l("Arriving by"), "radio", options=_enum_options(decl.TransportMode)
                ),
                FormField("transport.number", _l("Flight or vehicle number"), maxlength=decl.VEHICLE_MAX),
                FormField("transport.seat", _l("Seat"), required=False, maxlength=decl.SEAT_MAX),
                FormField("border_gate", _l("Border gate of entry"), "select", options=_gate_options),
                FormField("arrival_date", _l("Arrival date"), "date"),
                FormField(
                    "countries_visited",
                    _l("Countries or territories visited in the last 14 days"),
                    "multiselect",
                    options=country_options,
                    hint=_l("Hold Ctrl (or Cmd) to choose several."),
                    wide=True,
                ),
            ),
        ),
        Section(_l("Address during quarantine or stay"), _address_fields("quarantine_address.")),
        *_health_sections(test_rows=2),
    ]


def _field_names(sections: Iterable[Section], prefix: str = "") -> list[str]:
    return [prefix + f.name for section in sections for f in section.fields]


# --------------------------------------------------------------------------------- form data


class FormState:
    """Submitted values and error messages of a form, looked up by field name in templates."""

    def __init__(
        self, values: Mapping[str, list[str]] | None = None, errors: Mapping[str, str] | None = None
    ):
        self._values = dict(values or {})
        self.errors = dict(errors or {})
        self.general: list[str] = []
        self.labels: Mapping[str, Any] = {}

    def value(self, name: str, default: str = "") -> str:
        """The first submitted value of a field (what a text input or select shows)."""
        values = self._values.get(name)
        return values[0] if values else default

    def values(self, name: str) -> list[str]:
        """Every submitted value of a field (ticked checkboxes, chosen options)."""
        return list(self._values.get(name, ()))

    def error(self, name: str) -> str | None:
        """The message shown under a field, if any."""
        return self.errors.get(name)

    def place(self, known: Iterable[str], labels: Mapping[str, Any]) -> None:
        """Move every error to a field that is on the page (or to ``general``)."""
        known = list(known)
        placed: dict[str, str] = {}
        for path, message in self.errors.items():
            target = _nearest_field(path, known)
            if target is None:
                self.general.append(message)
            else:
                placed.setdefault(target, message)
        self.errors = placed
        self.labels = labels

    def summary(self) -> list[tuple[str, str, str]]:
        """(field id, label, message) of every placed error, in page order."""
        return [(field_id(name), str(self.labels.get(name, "")), msg) for name, msg in self.errors.items()]


def _nearest_field(path: str, known: list[str]) -> str | None:
    if path in known:
        return path
    parts = path.split(".")
    # A list entry ("symptoms.2") belongs to its list field; a missing group to its first field.
    while parts and parts[-1].isdigit():
        parts.pop()
        if ".".join(parts) in known:
            return ".".join(parts)
    prefix = path + "."
    return next((name for name in known if name.startswith(prefix)), None)


def field_id(name: str) -> str:
    """The HTML id of a field: ``f-members-1-birth_date``."""
    return "f-" + name.replace(".", "-")


def flat_values(form: MultiDict) -> dict[str, list[str]]:
    """Submitted answers as name -> values, without control fields, odd names or blank values."""
    out: dict[str, list[str]] = {}
    for name in list(form.keys())[:MAX_FIELDS]:
        if name in CONTROL_FIELDS or len(name) > MAX_FIELD_NAME or name.count(".") >= MAX_FIELD_DEPTH:
            continue
        values = [v for v in form.getlist(name) if v.strip()]
        if values:
            out[name] = values
    return out


def unflatten(values: Mapping[str, list[str]]) -> dict[str, Any]:
    """Nested answers for the domain models: ``a.0.b`` -> ``{"a": [{"b": …}]}``; list fields keep every value.

    Names that clash (``a`` and ``a.b``) keep the first seen; list indexes above a small bound are ignored.
    """
    root: dict[str, Any] = {}
    for name, vals in values.items():
        parts = name.split(".")
        if any(not p for p in parts):
            continue
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            leaf = parts[-1]
            if leaf not in node:
                node[leaf] = list(vals) if leaf in LIST_FIELDS else vals[0]
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _lists(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        # Gaps become empty entries, so entry n keeps its number and its problems land on its fields.
        top = max((int(key) for key in converted if int(key) <= MAX_LIST_INDEX), default=-1)
        return [converted.get(str(i), {}) for i in range(top + 1)]
    return converted


def _renumber(values: dict[str, list[str]], prefix: str, order: list[int]) -> dict[str, list[str]]:
    """Rename ``prefix.<old>.…`` to ``prefix.<new>.…`` where ``order[new] == old``; drop the rest."""
    new_of = {old: new for new, old in enumerate(order)}
    out: dict[str, list[str]] = {}
    head = prefix + "."
    for name, vals in values.items():
        if name.startswith(head):
            index, _sep, rest = name[len(head) :].partition(".")
            if not index.isdigit() or int(index) not in new_of:
                continue
            name = f"{head}{new_of[int(index)]}.{rest}" if rest else f"{head}{new_of[int(index)]}"
        out[name] = vals
    return out


def _compact_tests(values: dict[str, list[str]], person: str, rows: int) -> dict[str, list[str]]:
    """Drop blank test rows and move the filled ones up, so the row numbers shown match the data."""
    prefix = f"{person}tests"
    filled = [row for row in range(rows) if any(k.startswith(f"{prefix}.{row}.") for k in values)]
    return _renumber(values, prefix, filled)


def _labels(sections: Iterable[Section], prefix: str = "") -> dict[str, Any]:
    return {prefix + f.name: f.label for section in sections for f in section.fields}


# --------------------------------------------------------------------------------- pages


@bp.get("/")
@public_view
def index():
    """The start page: declare your health, declare on entry, find your pass."""
    return render_template("public/index.html")


def _member_count(form: MultiDict) -> int:
    try:
        count = int(form.get("member_count", "0"))
    except ValueError:
        count = 0
    return max(0, min(count, decl.MAX_MEMBERS))


def _ncovi_page(state: FormState, member_count: int, status: int = 200):
    declarant_sections = _ncovi_person_sections(member=False)
    member_sections = _ncovi_person_sections(member=True)
    known = _field_names(declarant_sections, "declarant.")
    labels = _labels(declarant_sections, "declarant.")
    for index in range(member_count):
        known += _field_names(member_sections, f"members.{index}.")
        person = _("Family member %(number)s", number=index + 1)
        labels.update(
            (name, f"{person} – {label}")
            for name, label in _labels(member_sections, f"members.{index}.").items()
        )
    state.place(known, labels)
    return (
        render_template(
            "public/ncovi.html",
            form=state,
            declarant_sections=declarant_sections,
            member_sections=member_sections,
            member_count=member_count,
            max_members=decl.MAX_MEMBERS,
        ),
        status,
    )


@bp.route("/khai-bao", methods=["GET", "POST"])
@limiter.limit(public_form_rate, methods=["POST"])
@public_view
def ncovi():
    """The NCOVI health declaration, for yourself and your family members."""
    if request.method == "GET":
        return _ncovi_page(FormState({"declarant.nationality": ["VN"]}), 0)
    member_count = _member_count(request.form)
    values = flat_values(request.form)
    values = _renumber(values, "members", list(range(member_count)))
    action = request.form.get("action", "submit")
    if action == "add_member":
        return _ncovi_page(
            FormState({**values, f"members.{member_count}.nationality": ["VN"]}),
            min(member_count + 1, decl.MAX_MEMBERS),
        )
    if action.startswith("remove_member_"):
        gone = action.removeprefix("remove_member_")
        keep = [i for i in range(member_count) if str(i) != gone]
        return _ncovi_page(FormState(_renumber(values, "members", keep)), len(keep))
    values = _compact_tests(values, "declarant.", 1)
    for index in range(member_count):
        values = _compact_tests(values, f"members.{index}.", 1)
    data = unflatten(values)
    data.setdefault("declarant", {}).setdefault("address", {})
    if member_count:
        members = data.get("members") if isinstance(data.get("members"), list) else []
        data["members"] = members + [{}] * (member_count - len(members))
    web = hub_web()
    now = _clock()
    try:
        model = decl.validate_ncovi(data, today=decl.today_in_vietnam(now))
        with web.engine.begin() as conn:
            saved = decl.save_ncovi(conn, model, keyring=web.keyring, settings=web.config.passes, now=now)
    except decl.DeclarationError as exc:
        return _ncovi_page(FormState(values, exc.messages(_)), member_count, 400)
    return _show_result(saved)


@bp.route("/nhap-canh", methods=["GET", "POST"])
@limiter.limit(public_form_rate, methods=["POST"])
@public_view
def vhd():
    """The mandatory entry health declaration (VHD) for people arriving in Viet Nam."""
    sections = _vhd_sections()
    if request.method == "GET":
        return _vhd_page(FormState(), sections)
    values = _compact_tests(flat_values(request.form), "", 2)
    data = unflatten(values)
    data.setdefault("quarantine_address", {})
    data.setdefault("transport", {})
    web = hub_web()
    now = _clock()
    try:
        model = decl.validate_vhd(data, today=decl.today_in_vietnam(now))
        with web.engine.begin() as conn:
            saved = decl.save_vhd(conn, model, keyring=web.keyring, settings=web.config.passes, now=now)
    except decl.DeclarationError as exc:
        return _vhd_page(FormState(values, exc.messages(_)), sections, 400)
    return _show_result(saved)


def _vhd_page(state: FormState, sections: list[Section], status: int = 200):
    state.place(_field_names(sections), _labels(sections))
    return render_template("public/vhd.html", form=state, sections=sections), status


def _show_result(saved: list[decl.SavedDeclaration]):
    session[RESULT_KEY] = [s.pass_.pass_id for s in saved]
    return redirect(url_for("public.result"), code=303)


@bp.get("/ket-qua")
@public_view
def result():
    """The passes this browser's last declaration issued, with the reasons for each colour."""
    pass_ids = session.get(RESULT_KEY) or []
    if not isinstance(pass_ids, list) or not pass_ids:
        return redirect(url_for("public.index"))
    now = _clock()
    with hub_web().engine.connect() as conn:
        summaries = [
            s for s in (decl.pass_summary(conn, str(p), now) for p in pass_ids[:20]) if s is not None
        ]
    if not summaries:
        return redirect(url_for("public.index"))
    return render_template("public/result.html", summaries=summaries)


def _summary_or_404(pass_id: str, now: datetime) -> decl.PassSummary:
    if normalise_pass_id(pass_id) is None:
        abort(404)
    with hub_web().engine.connect() as conn:
        summary = decl.pass_summary(conn, pass_id, now)
    if summary is None:
        abort(404)
    return summary


def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _pass_page(pass_id: str, template: str):
    summary = _summary_or_404(pass_id, _clock())
    if summary.pass_.pass_id != pass_id:
        return redirect(url_for(request.endpoint, pass_id=summary.pass_.pass_id))
    status = 410 if summary.expired else 200
    return _no_store(make_response(render_template(template, s=summary), status))


@bp.get("/the/<pass_id>")
@public_view
def pass_page(pass_id: str):
    """A health pass to show at a kiosk: large QR, colour, initials, validity."""
    return _pass_page(pass_id, "public/pass.html")


@bp.get("/the/<pass_id>/in")
@public_view
def pass_print(pass_id: str):
    """The health pass laid out for printing on paper."""
    return _pass_page(pass_id, "public/pass_print.html")


def _qr_download(pass_id: str, kind: str):
    summary = _summary_or_404(pass_id, _clock())
    if summary.expired:
        abort(404)
    if kind == "png":
        body, mimetype = qr_png(summary.pass_.qr_text, scale=QR_SCALE), "image/png"
    else:
        body, mimetype = qr_svg(summary.pass_.qr_text, scale=QR_SCALE), "image/svg+xml"
    response = make_response(body)
    response.mimetype = mimetype
    filename = f"the-suc-khoe-{display_pass_id(summary.pass_.pass_id)}.{kind}"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return _no_store(response)


@bp.get("/the/<pass_id>/qr.png")
@public_view
def pass_png(pass_id: str):
    """The pass QR as a PNG image (also shown on the pass page)."""
    return _qr_download(pass_id, "png")


@bp.get("/the/<pass_id>/qr.svg")
@public_view
def pass_svg(pass_id: str):
    """The pass QR as an SVG image, for printing at any size."""
    return _qr_download(pass_id, "svg")


@dataclass
class _FindForm:
    pass_id: str = ""
    birth_date: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    not_found: bool = False


def _read_find_form() -> tuple[_FindForm, date | int | None]:
    """The pass id and birth date posted to "find my pass" or the status page, with field errors."""
    form = _FindForm(
        pass_id=request.form.get("pass_id", "")[:40], birth_date=request.form.get("birth_date", "")[:20]
    )
    if not form.pass_id.strip():
        form.errors["pass_id"] = _("Enter the pass id printed under the QR code.")
    elif normalise_pass_id(form.pass_id) is None:
        form.errors["pass_id"] = _("A pass id is 10 letters and digits, like ABCDE-FGHJK.")
    birth = decl.parse_birth(form.birth_date)
    if not form.birth_date.strip():
        form.errors["birth_date"] = _("Enter the birth date of the pass holder.")
    elif birth is None:
        form.errors["birth_date"] = _("Enter a date as dd/mm/yyyy, or the birth year.")
    return form, birth


@bp.route("/tim-the", methods=["GET", "POST"])
@limiter.limit(public_form_rate, methods=["POST"])
@public_view
def find_pass():
    """Find a health pass again with its id and the holder's birth date."""
    if request.method == "GET":
        return render_template("public/find.html", form=_FindForm())
    form, birth = _read_find_form()
    if form.errors:
        return render_template("public/find.html", form=form), 400
    with hub_web().engine.connect() as conn:
        found = decl.find_pass(conn, form.pass_id, birth)
    if found is None:
        form.not_found = True
        return render_template("public/find.html", form=form), 404
    return redirect(url_for("public.pass_page", pass_id=found.pass_id), code=303)


# --------------------------------------------------------------------------------- exposure status


@dataclass(frozen=True)
class ExposureNotice:
    """One open case the person is a contact of: their degree and where and when (never whom)."""

    degree: int
    places: list[Exposure]
    more: bool  # more encounters were recorded than are listed


def _person_of(conn, declaration_id: int) -> int | None:
    """The tracing person of a declaration: its link, else the person key of its ID number (a
    declaration made after the last linking has none yet); None when the person never checked in."""
    linked = conn.execute(
        select(declaration_persons.c.person_id).where(declaration_persons.c.declaration_id == declaration_id)
    ).scalar()
    if linked is not None:
        return int(linked)
    number = conn.execute(
        select(declarations.c.id_number).where(declarations.c.id == declaration_id)
    ).scalar()
    if number is None:
        return None
    key = hub_web().identity.person_key(number)
    found = conn.execute(select(persons.c.id).where(persons.c.person_key == key)).scalar()
    return None if found is None else int(found)


def exposure_notices(conn, declaration_id: int) -> list[ExposureNotice]:
    """The open cases (not dismissed) the declaration's person is a contact of, F1 first."""
    person_id = _person_of(conn, declaration_id)
    if person_id is None:
        return []
    rows = conn.execute(
        select(case_contacts.c.degree, case_contacts.c.reasons, case_contacts.c.encounters)
        .join(cases, cases.c.id == case_contacts.c.case_id)
        .where(
            and_(
                case_contacts.c.person_id == person_id,
                case_contacts.c.status != "dismissed",
                cases.c.status == "open",
            )
        )
        .order_by(case_contacts.c.degree, case_contacts.c.first_contact_s)
    ).all()
    return [
        ExposureNotice(int(degree), exposures(conn, reasons), int(count) > len(reasons or ()))
        for degree, reasons, count in rows
    ]


@bp.route("/tinh-trang", methods=["GET", "POST"])
@limiter.limit(public_form_rate, methods=["POST"])
@public_view
def exposure_status():
    """Whether the pass holder's recorded visits are linked to a confirmed case (pass id + birth date)."""
    if request.method == "GET":
        return render_template("public/status.html", form=_FindForm())
    form, birth = _read_find_form()
    if form.errors:
        return render_template("public/status.html", form=form), 400
    with hub_web().engine.connect() as conn:
        # The same query and the same answer for an unknown pass and a wrong birth date.
        found = decl.find_pass(conn, form.pass_id, birth)
        notices = exposure_notices(conn, found.declaration_id) if found is not None else None
    if notices is None:
        form.not_found = True
        return _no_store(make_response(render_template("public/status.html", form=form), 404))
    return _no_store(make_response(render_template("public/status_result.html", notices=notices)))


@bp.app_template_global()
def epoch_time(seconds: int) -> str:
    """Epoch seconds as a time in Viet Nam: ``08:30 20/11/2026``."""
    return local_time(datetime.fromtimestamp(seconds, UTC))


# --------------------------------------------------------------------------------- template helpers


@bp.app_template_global()
def colour_label(colour: str) -> str:
    """The colour's name in the current language."""
    return pass_rules.colour_label(colour, get_locale())


@bp.app_template_global()
def reason_label(code: str) -> str:
    """A colour reason in the current language."""
    return pass_rules.reason_label(code, get_locale())


@bp.app_template_global()
def relationship_label(code: str | None) -> str:
    """A family relationship in the current language ("" for the declarant)."""
    labels = decl.CHOICE_LABELS[decl.Relationship]
    return _(labels[code]) if code in labels else ""


@bp.app_template_global()
def local_time(value: datetime) -> str:
    """A time in Viet Nam's time zone: ``19:56 10/12/2026``."""
    # One unambiguous pattern in both languages (the locales' short formats use two-digit years).
    return format_datetime(value, "HH:mm dd/MM/yyyy")


bp.app_template_global("field_id")(field_id)
bp.app_template_global("display_pass_id")(display_pass_id)
