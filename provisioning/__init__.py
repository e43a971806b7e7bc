"""District IT tooling: broker configuration, kiosk enrolment (to come) and the local trial stack."""
