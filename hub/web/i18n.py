"""Translation catalogs of the hub web app: ``python -m hub.web.i18n update|compile|check``.

Message ids are English; Vietnamese is the default language, so every message needs a Vietnamese
translation. Each part of the app keeps its own gettext domain (so parts can be edited independently):

    update   extract messages from the sources into each domain's vi catalog (.po), keeping translations
    compile  write the binary catalogs (.mo) the app loads
    check    fail when a message lacks a Vietnamese translation or a .mo is older than its .po
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_file
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

from hub.web.app import TRANSLATION_DOMAINS, TRANSLATIONS_DIR

ROOT = Path(__file__).resolve().parents[2]
LOCALE = "vi"

#: The sources of each domain: files, or folders searched for *.py and *.html.
SOURCES: dict[str, tuple[str, ...]] = {
    "hub": (
        "hub/web/app.py",
        "hub/web/auth.py",
        "hub/web/extensions.py",
        "hub/web/templates/base.html",
        "hub/web/templates/error.html",
        "hub/web/templates/auth",
    ),
    "public": (
        "hub/web/public.py",
        "hub/declarations.py",
        "hub/pass_rules.py",
        "hub/web/templates/public",
    ),
    "admin": (
        "hub/web/admin.py",
        "hub/web/cases.py",
        "hub/web/templates/admin",
    ),
}
assert set(SOURCES) == set(TRANSLATION_DOMAINS), "every gettext domain needs its sources here"

KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "lazy_gettext": None, "N_": None}


def _files(domain: str) -> list[Path]:
    found: list[Path] = []
    for entry in SOURCES[domain]:
        path = ROOT / entry
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".py", ".html")))
        elif path.exists():
            found.append(path)
    return found


def extract(domain: str) -> Catalog:
    """The message template of one domain, read from its sources."""
    template = Catalog(project="antoan-checkin", domain=domain)
    for path in _files(domain):
        method = "jinja2" if path.suffix == ".html" else "python"
        options = {"extensions": "jinja2.ext.i18n", "trimmed": "true"} if method == "jinja2" else {}
        for lineno, message, comments, context in extract_from_file(
            method, str(path), keywords=KEYWORDS, options=options
        ):
            where = [(str(path.relative_to(ROOT)), lineno)]
            template.add(message, None, where, auto_comments=comments, context=context)
    return template


def po_path(domain: str) -> Path:
    return TRANSLATIONS_DIR / LOCALE / "LC_MESSAGES" / f"{domain}.po"


def _read(domain: str) -> Catalog:
    path = po_path(domain)
    if not path.exists():
        return Catalog(locale=LOCALE, domain=domain)
    with open(path, "rb") as handle:
        return read_po(handle, locale=LOCALE, domain=domain)


def update(domain: str) -> list[str]:
    """Merge new messages into the domain's catalog; returns the ids still untranslated."""
    catalog = _read(domain)
    catalog.update(extract(domain), no_fuzzy_matching=True)
    catalog.obsolete.clear()
    path = po_path(domain)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        write_po(handle, catalog, width=110, omit_header=False, sort_output=True)
    return _missing(catalog)


def _missing(catalog: Catalog) -> list[str]:
    return [str(m.id) for m in catalog if m.id and not _translated(m)]


def _translated(message) -> bool:
    """A message has a usable translation: every plural form filled, not marked fuzzy."""
    if message.fuzzy:
        return False
    forms = message.string if isinstance(message.string, tuple | list) else (message.string,)
    return bool(forms) and all(forms)


def _mo_bytes(catalog: Catalog) -> bytes:
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    return buffer.getvalue()


def compile_domain(domain: str) -> None:
    po_path(domain).with_suffix(".mo").write_bytes(_mo_bytes(_read(domain)))


def check(domain: str) -> list[str]:
    """Problems of one domain: messages in the sources without a Vietnamese translation, stale .mo."""
    problems = []
    catalog = _read(domain)
    have = {m.id: m for m in catalog if m.id}
    for message in extract(domain):
        if not message.id:
            continue
        known = have.get(message.id)
        if known is None or not _translated(known):
            problems.append(f"{domain}: no Vietnamese translation for {message.id!r}")
    mo = po_path(domain).with_suffix(".mo")
    if not mo.exists() or mo.read_bytes() != _mo_bytes(catalog):
        problems.append(f"{domain}: {mo.relative_to(ROOT)} is missing or older than its .po (run compile)")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in ("update", "compile", "check"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    command = args[0]
    status = 0
    for domain in TRANSLATION_DOMAINS:
        if command == "update":
            missing = update(domain)
            print(f"{domain}: {len(missing)} message(s) to translate in {po_path(domain).relative_to(ROOT)}")
            for message in missing:
                print(f"  {message!r}")
        elif command == "compile":
            compile_domain(domain)
            print(f"{domain}: compiled")
        else:
            problems = check(domain)
            for problem in problems:
                print(problem)
            status = status or (1 if problems else 0)
    if command == "check" and status == 0:
        print("translations complete")
    return status


if __name__ == "__main__":
    sys.exit(main())
