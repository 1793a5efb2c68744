#!/bin/sh
# First start of the postgres service only (docker-entrypoint-initdb.d): the governance store
# gets its own database and login role, so the governance API holds no Airflow metadata
# password and the Airflow role needs no access to the governance store. The password comes
# from GOVERNANCE_DB_PASSWORD (.env) as a psql variable, never on a command line.
set -eu
: "${GOVERNANCE_DB_PASSWORD:?set GOVERNANCE_DB_PASSWORD in .env}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v gov_password="$GOVERNANCE_DB_PASSWORD" <<'SQL'
CREATE ROLE joinedup_gov LOGIN PASSWORD :'gov_password';
CREATE DATABASE governance OWNER joinedup_gov;
REVOKE ALL ON DATABASE governance FROM PUBLIC;
-- nobody but the airflow role connects to the Airflow metadata database
REVOKE CONNECT ON DATABASE airflow FROM PUBLIC;
SQL
