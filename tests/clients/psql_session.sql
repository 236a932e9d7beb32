-- A psql session through launch-proxy (run by tests/clients.rs with
-- psql -X -v ON_ERROR_STOP=1 -f this file, from a scratch directory).
-- Each line the test checks starts with a "lp-" marker.
\set ON_ERROR_STOP 1
DROP TABLE IF EXISTS psql_items, psql_items_copy;
CREATE TABLE psql_items (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);

-- A multi-statement transaction with a savepoint.
BEGIN;
INSERT INTO psql_items VALUES (1, 'one', 10);
SAVEPOINT before_two;
INSERT INTO psql_items VALUES (2, 'wrong', -1);
ROLLBACK TO SAVEPOINT before_two;
INSERT INTO psql_items VALUES (2, 'two', 20);
COMMIT;

-- \copy in: rows from this file, text and CSV formats.
\copy psql_items FROM stdin
3	three	30
4	four	40
\.
\copy psql_items FROM stdin WITH (FORMAT csv)
5,"five, with a comma",50
6,six,60
\.

-- \copy out to a file, then back in from that file.
\copy (SELECT id, name, qty FROM psql_items ORDER BY id) TO 'items_out.csv' WITH (FORMAT csv, HEADER)
CREATE TABLE psql_items_copy (LIKE psql_items);
\copy psql_items_copy FROM 'items_out.csv' WITH (FORMAT csv, HEADER)

-- \copy out to stdout.
\copy (SELECT 'lp-copy-out', id, name FROM psql_items WHERE id IN (1, 5) ORDER BY id) TO stdout

-- A DO block that raises notices.
DO $$
DECLARE
    n int;
BEGIN
    SELECT count(*) INTO n FROM psql_items;
    RAISE NOTICE 'lp-notice: % items', n;
    RAISE NOTICE 'lp-notice: total qty %', (SELECT sum(qty) FROM psql_items);
END
$$;

-- \gset carries a value into a variable used in the next query.
SELECT count(*) AS copied FROM psql_items_copy \gset
SELECT 'lp-copied=' || :copied;
SELECT 'lp-same=' || (SELECT count(*) FROM (TABLE psql_items EXCEPT TABLE psql_items_copy) d);

-- An error caught inside a DO block (an exception block is a subtransaction).
DO $$
BEGIN
    BEGIN
        INSERT INTO psql_items VALUES (1, 'duplicate', 0);
    EXCEPTION WHEN unique_violation THEN
        RAISE NOTICE 'lp-caught: %', SQLSTATE;
    END;
END
$$;
SELECT 'lp-rows=' || count(*) || ',' || sum(qty) FROM psql_items;
\echo lp-psql-done
