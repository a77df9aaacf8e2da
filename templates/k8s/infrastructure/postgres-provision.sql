-- One service's role and database, each its own; idempotent. psql sets :role and :password.
-- DDL takes no parameters, so format() quotes the names (%I) and the password (%L).
SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'role', :'password') \gexec
-- An administrator who is no superuser (a managed instance's) may give a role a database only
-- if it may SET ROLE to it, which PostgreSQL 16 does not grant a role's creator; it inherits none
-- of the role's rights. Repeating the grant changes nothing.
SELECT format(CASE WHEN current_setting('server_version_num')::int >= 160000
        THEN 'GRANT %I TO CURRENT_USER WITH INHERIT FALSE, SET TRUE' ELSE 'GRANT %I TO CURRENT_USER' END, :'role')
    WHERE NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'role', :'role')
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'role') \gexec
-- no one else may even connect to it; revoked as its owner (a non-superuser's REVOKE would remove
-- only the grants it made itself, and PUBLIC's are the owner's)
SELECT format('SET ROLE %I', :'role') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'role') \gexec
RESET ROLE;
