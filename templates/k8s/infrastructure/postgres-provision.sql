-- One service's role and database, each its own; idempotent. psql sets :role and :password.
-- DDL takes no parameters, so format() quotes the names (%I) and the password (%L).
SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'role', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'role', :'role')
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'role') \gexec
-- no one else may even connect to it
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'role') \gexec
