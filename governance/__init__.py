"""Hub governance: protocols, consent, legitimate relationships, decisions, audit log, views."""
