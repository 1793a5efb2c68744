#!/bin/sh
# First start of the postgres service only (docker-entrypoint-initdb.d): the governance store
# gets its own database and login role, so the governance API holds no Airflow metadata
# password, and nobody but the airflow role may connect to the Airflow metadata database.
# The password (GOVERNANCE_DB_PASSWORD, .env) goes to psql on stdin, never on a command line.
set -eu
pw="${GOVERNANCE_DB_PASSWORD:-}"
case "$pw" in
    "") echo "GOVERNANCE_DB_PASSWORD is not set" >&2; exit 1 ;;
    *[!A-Za-z0-9_.-]*) echo "GOVERNANCE_DB_PASSWORD may hold only A-Z a-z 0-9 _ . -" >&2
                       exit 1 ;;
esac
[ "${#pw}" -ge 32 ] || { echo "GOVERNANCE_DB_PASSWORD must be at least 32 characters" >&2
                         exit 1; }
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
\set gov_password '$pw'
BEGIN;
CREATE ROLE joinedup_gov LOGIN PASSWORD :'gov_password';
REVOKE CONNECT ON DATABASE "$POSTGRES_DB" FROM PUBLIC;
COMMIT;
CREATE DATABASE governance OWNER joinedup_gov;
REVOKE ALL ON DATABASE governance FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE governance TO joinedup_gov;
SQL
