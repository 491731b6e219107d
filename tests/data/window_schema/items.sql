-- The table of the window tests: a column of each affinity, values of mixed storage
-- classes, NULLs and many ties.

CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    grp INTEGER NOT NULL,
    a,
    b REAL,
    c TEXT
);
CREATE INDEX items_grp_a ON items (grp, a);

-- Written between steps by the client library, to know when its view has caught up.
CREATE TABLE marks (
    id INTEGER PRIMARY KEY,
    n INTEGER
);
